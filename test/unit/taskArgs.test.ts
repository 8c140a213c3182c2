import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  analyzeCheckpointsArgs,
  compareArgs,
  demoArgs,
  engineInvocation,
  exportArgs,
  installArgs,
  parseSetup,
  planArgs,
  runExperimentArgs,
  TaskArgError,
  upcycleArgs,
} from '../../extension/src/jobs/taskArgs';
import {
  chooseInterpreter,
  compareVersions,
  parseEngineVersion,
} from '../../extension/src/engine/interpreter';

const base = path.resolve('/work space/with "quotes"');
const hostile = [
  'my runs/with space',
  'it\'s "quoted"',
  '$(touch /tmp/pwned)',
  '`id`',
  'a; rm -rf ~',
  'x && y | z > out',
  '$HOME/${USER}',
  'ünïcødé ✓',
  '--help',
  '-rf',
  'new\nline',
];

/** Runs a real process with the array, to prove each element arrives as one verbatim argv entry. */
function echoArgv(inv: { command: string; args: string[] }): string[] {
  const out = execFileSync(process.execPath, [
    '-e',
    'process.stdout.write(JSON.stringify(process.argv.slice(1)))',
    '--',
    ...inv.args,
  ]);
  return JSON.parse(out.toString());
}

describe('task arguments', () => {
  it('demo: quick demo into the runs dir, as the e2e test expects', () => {
    assert.deepEqual(demoArgs('runs', '/ws'), ['demo', '--quick', '--out', '/ws/runs']);
  });

  for (const p of hostile) {
    it(`passes ${JSON.stringify(p)} through verbatim as one argument`, () => {
      const args = runExperimentArgs(p, base);
      assert.equal(args.length, 2);
      assert.equal(args[1], path.resolve(base, p));
      // Paths are absolute, so even "--help" or "-rf" cannot be mistaken for an option.
      assert.ok(path.isAbsolute(args[1]));
      const inv = engineInvocation('/opt/py env/bin/python', args);
      assert.equal(inv.command, '/opt/py env/bin/python');
      assert.deepEqual(inv.args, ['-m', 'moelab', 'run', path.resolve(base, p)]);
      assert.deepEqual(echoArgv(inv), inv.args);
    });
  }

  it('upcycle, export, analyze keep every path as one element', () => {
    const a = upcycleArgs(
      {
        method: 'btx',
        seed: 'seed dir',
        experts: ['e 1', '$(e2)', 'e;3'],
        out: 'out "x"',
        topK: 2,
        numExperts: 3,
        routerSeed: 0,
      },
      base,
    );
    assert.deepEqual(a, [
      'upcycle',
      '--method',
      'btx',
      '--seed',
      path.join(base, 'seed dir'),
      '--expert',
      path.join(base, 'e 1'),
      '--expert',
      path.join(base, '$(e2)'),
      '--expert',
      path.join(base, 'e;3'),
      '--out',
      path.join(base, 'out "x"'),
      '--top-k',
      '2',
      '--num-experts',
      '3',
      '--router-seed',
      '0',
    ]);
    assert.deepEqual(echoArgv({ command: 'x', args: a }), a);
    assert.deepEqual(exportArgs('c k', 'onnx', '$o', base).slice(0, 2), ['export', '--ckpt']);
    assert.deepEqual(analyzeCheckpointsArgs(['a', 'b'], 'o', '/r'), [
      'analyze',
      '--ckpt',
      '/r/a',
      '--ckpt',
      '/r/b',
      '--out',
      '/r/o',
    ]);
  });

  it('refuses NUL bytes, unknown methods and formats, bad integers', () => {
    assert.throws(() => runExperimentArgs('a\0b', base), TaskArgError);
    assert.throws(
      () => upcycleArgs({ method: 'evil; rm' as never, seed: 's', experts: [], out: 'o' }, base),
      TaskArgError,
    );
    assert.throws(
      () => upcycleArgs({ method: 'sparse', seed: 's', experts: [], out: 'o', topK: 1.5 }, base),
      TaskArgError,
    );
    assert.throws(() => exportArgs('c', 'sh' as never, 'o', base), TaskArgError);
    assert.throws(() => engineInvocation('py', ['run', 'x\0']), TaskArgError);
  });

  it('plan: the checkpoint, GPUs, memory, sequence and parallelism; typed setups parse', () => {
    assert.deepEqual(planArgs('run a/ckpt', 8, 141, 'fsdp+ep', 4096, base), [
      'plan',
      '--ckpt',
      path.join(base, 'run a/ckpt'),
      '--gpus',
      '8',
      '--gpu-mem',
      '141',
      '--seq',
      '4096',
      '--parallel',
      'fsdp+ep',
    ]);
    assert.throws(() => planArgs('c', 0, 80, 'fsdp', 4096, base), TaskArgError);
    assert.throws(() => planArgs('c', 8, 80, 'fsdp', 1.5, base), TaskArgError);
    assert.throws(() => planArgs('c', 8, -1, 'fsdp', 4096, base), TaskArgError);
    assert.throws(() => planArgs('c', 8, 80, 'tp' as never, 4096, base), TaskArgError);
    assert.deepEqual(parseSetup('4 × 48'), { gpus: 4, memGiB: 48 });
    assert.deepEqual(parseSetup(' 2x40.5 GiB '), { gpus: 2, memGiB: 40.5 });
    assert.equal(parseSetup('0 x 80'), undefined);
    assert.equal(parseSetup('eight GPUs'), undefined);
  });

  it('launchers wrap without a shell; device goes through the environment', () => {
    const args = ['train', '/a b/c.json'];
    const local = engineInvocation('py', args, { kind: 'slurm', device: 'cuda' }, false);
    assert.deepEqual(local.args, ['-m', 'moelab', 'train', '/a b/c.json']);
    assert.equal(local.env?.MOELAB_DEVICE, 'cuda');
    const tr = engineInvocation('py', args, { kind: 'torchrun', torchrunProcsPerNode: 4 }, true);
    assert.deepEqual(tr.args, [
      '-m',
      'torch.distributed.run',
      '--standalone',
      '--nproc-per-node',
      '4',
      '-m',
      'moelab',
      'train',
      '/a b/c.json',
    ]);
    // The slurm launcher is no wrapper any more: with kind "slurm" the invocation stays local
    // (callers swap in `moelab slurm submit`, see slurm.test.ts).
    const slurm = engineInvocation(
      '/p y',
      args,
      { kind: 'slurm', slurm: { partition: 'gpu; x', gpusPerNode: 2, time: '01:00:00' } },
      true,
    );
    assert.equal(slurm.command, '/p y');
    assert.deepEqual(slurm.args, ['-m', 'moelab', 'train', '/a b/c.json']);
  });

  it('install: editable workspace engine, else the bundled engine, else the index', () => {
    assert.deepEqual(installArgs({ editable: '/w s/engine' }), ['pip', 'install', '-e', '/w s/engine']);
    assert.deepEqual(installArgs({ local: '/ext/engine' }), ['pip', 'install', '/ext/engine']);
    assert.deepEqual(installArgs({}), ['pip', 'install', 'moelab']);
  });
});

describe('hostile paths through a real process', () => {
  it('every job builder: files land where named, and nothing else runs', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'moelab-argv-'));
    const ws = path.join(root, 'work space $(touch PWNED1); `touch PWNED2` \'q\' "dq"');
    fs.mkdirSync(ws);
    // A stand-in interpreter (no shell anywhere): records its argv and creates the --out path it is given.
    const fake = path.join(root, 'fake python $(touch PWNED3)');
    fs.writeFileSync(
      fake,
      `#!${process.execPath}\nconst fs = require('fs');\nconst a = process.argv.slice(2);\nfs.appendFileSync(process.env.ARGV_LOG, JSON.stringify(a) + '\\n');\nconst i = a.indexOf('--out');\nif (i >= 0) fs.mkdirSync(a[i + 1], { recursive: true });\n`,
    );
    fs.chmodSync(fake, 0o755);
    const log = path.join(root, 'argv.jsonl');
    const names = ['runs; touch PWNED4', '$(touch PWNED5)', "it's `id`", '-rf && touch PWNED6'];
    const jobs: string[][] = [];
    for (const n of names) {
      jobs.push(demoArgs(n, ws));
      jobs.push(runExperimentArgs(`${n}.moelab.json`, ws));
      jobs.push(
        upcycleArgs(
          { method: 'btx', seed: `seed ${n}`, experts: [n, `${n}2`], out: `out ${n}`, topK: 2 },
          ws,
        ),
      );
      jobs.push(
        exportArgs(n, 'onnx', `export ${n}`, ws),
        analyzeCheckpointsArgs([n, `${n}b`], `analysis ${n}`, ws),
        compareArgs(n, `${n}c`, `cmp ${n}`, ws),
      );
    }
    for (const job of jobs) {
      const inv = engineInvocation(fake, job);
      execFileSync(inv.command, inv.args, { cwd: ws, env: { ...process.env, ...inv.env, ARGV_LOG: log } });
    }
    const seen = fs
      .readFileSync(log, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      seen,
      jobs.map((j) => ['-m', 'moelab', ...j]),
    );
    for (const job of jobs.filter((j) => j.includes('--out'))) {
      const out = job[job.indexOf('--out') + 1];
      assert.ok(fs.statSync(out).isDirectory(), `missing ${out}`);
      assert.equal(path.dirname(out), ws);
    }
    const pwned = fs
      .readdirSync(root, { recursive: true })
      .map(String)
      .filter((f) => path.basename(f).startsWith('PWNED'));
    assert.deepEqual(pwned, []);
    assert.ok(!fs.readdirSync(process.cwd()).some((f) => f.startsWith('PWNED')));
    fs.rmSync(root, { recursive: true, force: true });
  });
});

describe('interpreter choice and engine version', () => {
  it('Python extension > setting > workspace .venv with moelab > python3', () => {
    assert.deepEqual(
      chooseInterpreter({ pythonExtension: '/e', setting: '/s', workspaceVenv: '/v' }, 'linux'),
      { python: '/e', source: 'pythonExtension' },
    );
    assert.deepEqual(chooseInterpreter({ setting: ' /s ', workspaceVenv: '/v' }, 'linux'), {
      python: '/s',
      source: 'setting',
    });
    assert.deepEqual(chooseInterpreter({ setting: '', workspaceVenv: '/v' }, 'linux'), {
      python: '/v',
      source: 'workspaceVenv',
    });
    assert.deepEqual(chooseInterpreter({}, 'linux'), { python: 'python3', source: 'default' });
    assert.equal(chooseInterpreter({}, 'win32').python, 'python');
  });

  it('parses "moelab 0.1.0" and compares versions', () => {
    assert.equal(parseEngineVersion('moelab 0.1.0\n'), '0.1.0');
    assert.equal(parseEngineVersion('No module named moelab'), undefined);
    assert.equal(compareVersions('0.1.0', '0.1.0'), 0);
    assert.equal(compareVersions('0.10.0', '0.9.9'), 1);
    assert.equal(compareVersions('0.0.9', '0.1.0'), -1);
  });
});
