// Splits a GGUF into shards as llama.cpp's gguf-split does (tools/gguf-split/gguf-split.cpp,
// split_strategy): all metadata in the first shard only, then in every shard split.no (u16),
// split.tensors.count (i32) and split.count (u16), in that order (gguf_set_val_* removes a key and
// appends it, so the count set last comes last); the tensors in source order, each shard's header
// from ggml's gguf code (the shim's ggufBuildHeader), the bytes copied as they are.
import { closeSync, openSync } from 'node:fs';
import { splitPath } from '../../src/gguf/model.ts';
import { readGgufSync, type GgufMetadataEntry } from '../../src/gguf/reader.ts';
import { GGUF_VALUE } from '../../src/gguf/types.ts';
import { writeGgufFile } from '../../src/gguf/writer.ts';
import { loadNative } from '../../src/native.ts';
import { readTensorBytes } from '../../src/core/tensor-io.ts';

/** Writes `<prefix>-0000i-of-0000N.gguf` with `tensorsPerShard` tensors each (gguf-split --split-max-tensors); returns the paths. */
export async function splitGguf(source: string, prefix: string, tensorsPerShard: number): Promise<string[]> {
  const info = readGgufSync(source);
  const groups: (typeof info.tensors)[] = [];
  info.tensors.forEach((t, i) => { if (i % tensorsPerShard === 0) groups.push([]); groups[groups.length - 1].push(t); });
  const n = groups.length;
  const native = loadNative();
  const fd = openSync(source, 'r');
  const files: string[] = [];
  try {
    for (let i = 0; i < n; i++) {
      const metadata: GgufMetadataEntry[] = [
        ...(i === 0 ? info.metadataEntries : []),
        { key: 'split.no', type: GGUF_VALUE.UINT16, value: i },
        { key: 'split.tensors.count', type: GGUF_VALUE.INT32, value: info.tensors.length },
        { key: 'split.count', type: GGUF_VALUE.UINT16, value: n },
      ];
      const { header, tensors: placed } = native.ggufBuildHeader({ metadata, tensors: groups[i].map((t) => ({ name: t.name, type: t.type, shape: t.shape })) }) as {
        header: Buffer; tensors: { offset: number; byteSize: number }[];
      };
      const file = splitPath(prefix, i, n);
      await writeGgufFile(file, header, placed, (put) => { groups[i].forEach((t, k) => put(k, readTensorBytes(fd, t))); }, { alignment: info.alignment });
      files.push(file);
    }
  } finally {
    closeSync(fd);
  }
  return files;
}
