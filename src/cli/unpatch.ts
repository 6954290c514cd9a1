import { unpatchModel } from '../patch/patch.ts';
import { ProgressLine, globalHelp, parse, UsageError, writeJson, type Command } from './common.ts';
import { phaseLabel } from './patch.ts';

export const command: Command = {
  name: 'unpatch',
  summary: 'restore a model patched in place from its undo journal, bit-exactly',
  help: `usage: mathneuro unpatch <model.gguf> [--keep-journal]

Writes back the original bytes kept in <model.gguf>.mathneuro-undo (newest first), checks that the
file's sha256 is the original's again, and removes the journal. Works on a patch that was
interrupted at any moment (kill -9, power loss): writes the journal never recorded were never made.

  --keep-journal   leave the journal in place after a successful restore
${globalHelp}

examples:
  mathneuro unpatch model.gguf
  mathneuro unpatch model.gguf --json`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { 'keep-journal': { type: 'boolean' } });
    if (positionals.length !== 1) throw new UsageError('expected one model path');
    const progress = new ProgressLine(io, values.quiet || values.json);
    const r = await unpatchModel(positionals[0], { keepJournal: values['keep-journal'], onProgress: (p) => progress.step(phaseLabel[p.phase], p.done, p.total, p.item ?? '') }).catch((e) => { progress.abandon(); throw e; });
    progress.done();
    if (values.json) writeJson(io, { ok: true, ...r });
    else if (!values.quiet) {
      io.stdout.write(`restored ${r.model}: ${r.restoredRanges} ranges, ${r.restoredBytes.toLocaleString('en-US')} bytes${r.wasComplete ? '' : ' (the patch had been interrupted)'}; sha256 ${r.sha256} is the original\n`);
    }
    return 0;
  },
};
