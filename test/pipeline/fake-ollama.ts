// A fake Ollama model store laid out as Ollama writes it (manifests + content-addressed blobs).
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export const LLAMA3_TEMPLATE = '{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n{{ .Response }}<|eot_id|>';

/** Write blobs and a manifest like Ollama does; returns the store path and the model blob path. */
export function fakeStore(dir: string, options: { name?: string; tag?: string; namespace?: string; host?: string; model?: Buffer; legacyNames?: boolean; extraLayers?: { mediaType: string; content: string }[]; layers?: 'default' | 'model-only'; badSize?: boolean } = {}) {
  const store = path.join(dir, 'models');
  mkdirSync(path.join(store, 'blobs'), { recursive: true });
  const blob = (content: Buffer | string) => {
    const bytes = Buffer.isBuffer(content) ? content : Buffer.from(content);
    const hex = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(path.join(store, 'blobs', `sha256${options.legacyNames ? ':' : '-'}${hex}`), bytes);
    return { digest: `sha256:${hex}`, size: bytes.length };
  };
  const model = options.model ?? Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(60, 1)]);
  const modelLayer = { mediaType: 'application/vnd.ollama.image.model', ...blob(model) };
  if (options.badSize) modelLayer.size += 1;
  const layers = [modelLayer];
  if (options.layers !== 'model-only') {
    layers.push({ mediaType: 'application/vnd.ollama.image.template', ...blob(LLAMA3_TEMPLATE) });
    layers.push({ mediaType: 'application/vnd.ollama.image.license', ...blob('LLAMA 3.2 COMMUNITY LICENSE AGREEMENT\nBe nice.') });
    layers.push({ mediaType: 'application/vnd.ollama.image.params', ...blob(JSON.stringify({ stop: ['<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>'], temperature: 0.6 })) });
    layers.push({ mediaType: 'application/vnd.ollama.image.system', ...blob('You are a careful math tutor.') });
  }
  for (const l of options.extraLayers ?? []) layers.push({ mediaType: l.mediaType, ...blob(l.content) });
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json', config: { mediaType: 'application/vnd.docker.container.image.v1+json', ...blob('{"model_format":"gguf"}') }, layers };
  const mdir = path.join(store, 'manifests', options.host ?? 'registry.ollama.ai', options.namespace ?? 'library', options.name ?? 'llama3.2');
  mkdirSync(mdir, { recursive: true });
  writeFileSync(path.join(mdir, options.tag ?? '1b'), JSON.stringify(manifest));
  return { store, modelBlob: path.join(store, 'blobs', `sha256${options.legacyNames ? ':' : '-'}${modelLayer.digest.slice(7)}`) };
}
