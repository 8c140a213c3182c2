import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  parseSlurmStatus,
  runDirOfScript,
  runsRootOf,
  scriptPathFor,
  slurmCancelArgs,
  type SlurmJobState,
  slurmLabel,
  slurmLogArgs,
  slurmResourceArgs,
  slurmRunStatus,
  slurmScriptArgs,
  slurmStatusArgs,
  slurmSubmitConfigArgs,
  slurmSubmitScriptArgs,
  slurmTaskArgs,
} from '../../extension/src/jobs/slurmArgs';
import {
  fetchSlurmStatus,
  hasRecordsWithoutRun,
  hasSlurmRecords,
  SlurmPoller,
} from '../../extension/src/jobs/slurmPoller';
import { engineInvocation, TaskArgError } from '../../extension/src/jobs/taskArgs';
import type { RunInfo } from '../../extension/src/runs/model';
import { runDescription } from '../../extension/src/runs/runsTreeModel';
import { HAVE_VENV, NO_VENV_REASON, PYTHON, REPO } from './inspectorFixtures';

const base = path.resolve('/work space/with "quotes"');
const hostile = [
  'gpu; rm -rf ~',
  '$(touch /tmp/pwned)',
  'a b',
  'it\'s "q"',
  '`id`',
  '-x',
  '--account=evil',
  'new\nline',
];

/** Runs a real process with the array, to prove each element arrives as one verbatim argv entry. */
function echoArgv(args: string[]): string[] {
  const out = execFileSync(process.execPath, [
    '-e',
    'process.stdout.write(JSON.stringify(process.argv.slice(1)))',
    '--',
    ...args,
  ]);
  return JSON.parse(out.toString());
}

describe('moelab slurm argument arrays', () => {
  it('script: config, only the resources that are set, --out; paths absolute', () => {
    assert.deepEqual(slurmScriptArgs('cfg/moe.json', 'cfg/moe.sbatch', {}, base), [
      'slurm',
      'script',
      path.join(base, 'cfg/moe.json'),
      `--out=${path.join(base, 'cfg/moe.sbatch')}`,
    ]);
    const all = {
      nodes: 2,
      gpusPerNode: 4,
      procsPerNode: 2,
      time: '12:00:00',
      partition: 'gpu',
      account: 'proj',
      cpusPerTask: 32,
    };
    assert.deepEqual(slurmScriptArgs('/c.json', '/c.sbatch', all, base), [
      'slurm',
      'script',
      '/c.json',
      '--nodes=2',
      '--gpus-per-node=4',
      '--procs-per-node=2',
      '--time=12:00:00',
      '--partition=gpu',
      '--account=proj',
      '--cpus-per-task=32',
      '--out=/c.sbatch',
    ]);
    // gpusPerNode 0 (CPU) is a choice, not "unset".
    assert.deepEqual(slurmResourceArgs({ gpusPerNode: 0, partition: '' }), ['--gpus-per-node=0']);
  });

  it('submit, status, cancel, log', () => {
    assert.deepEqual(slurmSubmitScriptArgs('job.sbatch', '/ws'), [
      'slurm',
      'submit',
      '--script=/ws/job.sbatch',
    ]);
    assert.deepEqual(slurmSubmitConfigArgs('c.json', { nodes: 1 }, '/ws'), [
      'slurm',
      'submit',
      '/ws/c.json',
      '--nodes=1',
    ]);
    assert.deepEqual(slurmStatusArgs('runs', '/ws'), ['slurm', 'status', '--runs=/ws/runs', '--json']);
    assert.deepEqual(slurmCancelArgs('runs/a', '/ws'), ['slurm', 'cancel', '/ws/runs/a']);
    assert.deepEqual(slurmLogArgs('runs/a', '/ws'), ['slurm', 'log', '/ws/runs/a', '--follow']);
    assert.deepEqual(slurmLogArgs('/r', '/ws', false), ['slurm', 'log', '/r']);
  });

  for (const v of hostile) {
    it(`hostile setting ${JSON.stringify(v)} stays one argv entry, for every command`, () => {
      const s = { partition: v, account: v, time: v };
      const p = `dir ${v}/cfg.json`;
      const arrays = [
        slurmScriptArgs(p, `${p}.sbatch`, s, base),
        slurmSubmitScriptArgs(`${v}.sbatch`, base),
        slurmSubmitConfigArgs(p, s, base),
        slurmStatusArgs(v, base),
        slurmCancelArgs(v, base),
        slurmLogArgs(v, base),
      ];
      for (const a of arrays) {
        // No value is ever its own element after a flag, and none is an option by itself: a value
        // like "-x" or "--account=evil" is glued to its flag or is an absolute path.
        assert.ok(
          a.slice(2).every((x) => x.startsWith('--') || path.isAbsolute(x)),
          JSON.stringify(a),
        );
        assert.deepEqual(echoArgv(engineInvocation('/py', a).args), ['-m', 'moelab', ...a]);
      }
      const script = arrays[0];
      assert.ok(
        script.includes(`--partition=${v}`) &&
          script.includes(`--account=${v}`) &&
          script.includes(`--time=${v}`),
      );
      assert.equal(script.filter((x) => x.includes(v)).length, 5); // config, partition, account, time, --out
    });
  }

  it('refuses NUL bytes and bad integers', () => {
    assert.throws(() => slurmResourceArgs({ partition: 'a\0b' }), TaskArgError);
    assert.throws(() => slurmResourceArgs({ nodes: 0 }), TaskArgError);
    assert.throws(() => slurmResourceArgs({ gpusPerNode: 1.5 }), TaskArgError);
    assert.throws(() => slurmScriptArgs('c\0.json', 'o', {}, base), TaskArgError);
  });

  it('slurm launcher: train/run CONFIG becomes `slurm submit CONFIG`; anything else is refused', () => {
    assert.deepEqual(slurmTaskArgs(['train', '/c.json'], { gpusPerNode: 2 }, '/ws'), [
      'slurm',
      'submit',
      '/c.json',
      '--gpus-per-node=2',
    ]);
    assert.deepEqual(slurmTaskArgs(['run', 'e.moelab.json'], {}, '/ws'), [
      'slurm',
      'submit',
      '/ws/e.moelab.json',
    ]);
    assert.throws(() => slurmTaskArgs(['train', '/c.json', '--resume'], {}, '/ws'), TaskArgError);
    assert.throws(() => slurmTaskArgs(['eval', '/c'], {}, '/ws'), TaskArgError);
  });

  it(
    'the engine renders the settings: multi-node torchrun, rendezvous on the first node, workers per node',
    { skip: HAVE_VENV ? false : NO_VENV_REASON },
    () => {
      const ws = fs.mkdtempSync(path.join(os.tmpdir(), 'moelab-slurm-script-'));
      try {
        const config = path.join(ws, 'moe.json');
        fs.writeFileSync(config, JSON.stringify({ run_id: 'moe', out: 'runs' }));
        const out = path.join(ws, 'moe.sbatch');
        const settings = { nodes: 2, gpusPerNode: 4, procsPerNode: 2, cpusPerTask: 8 };
        const inv = engineInvocation(PYTHON, slurmScriptArgs(config, out, settings, ws));
        const r = spawnSync(inv.command, inv.args, {
          cwd: ws,
          env: { ...process.env, ...inv.env, PYTHONPATH: path.join(REPO, 'engine') },
          encoding: 'utf8',
          timeout: 60_000,
        });
        assert.equal(r.status, 0, r.stderr);
        const text = fs.readFileSync(out, 'utf8');
        for (const line of ['--nodes=2', '--ntasks-per-node=1', '--gpus-per-node=4', '--cpus-per-task=8'])
          assert.ok(text.includes(`#SBATCH ${line}\n`), line);
        assert.match(text, /head=\$\(scontrol show hostnames "\$SLURM_JOB_NODELIST" \| head -n 1\)/);
        assert.match(text, /--nnodes "\$SLURM_NNODES"/);
        assert.match(text, /--nproc-per-node 2 /);
        assert.match(text, /--rdzv-endpoint "\$head:\$port"/);
      } finally {
        fs.rmSync(ws, { recursive: true, force: true });
      }
    },
  );

  it('script path beside the config; runs root of a run dir and of an experiment record', () => {
    assert.equal(scriptPathFor('/w/exp.moelab.json'), '/w/exp.sbatch');
    assert.equal(scriptPathFor('/w/configs/moe.json'), '/w/configs/moe.sbatch');
    assert.equal(runsRootOf('/w/runs/moe-btx'), '/w/runs');
    assert.equal(runsRootOf('/w/runs/.slurm/exp'), '/w/runs');
    assert.equal(
      runDirOfScript('#!/bin/bash\n#SBATCH --nodes=1\n# moelab-run-dir: /w/runs/a b\n\nset -e\n'),
      '/w/runs/a b',
    );
    assert.equal(runDirOfScript('#!/bin/bash\nsleep 1\n'), undefined);
  });
});

describe('moelab slurm status --json', () => {
  // As printed by engine/moelab/commands/slurm.py (_status without a target).
  const engineJson = JSON.stringify([
    {
      job_id: '1234',
      state: 'PENDING',
      source: 'squeue',
      reason: 'Resources',
      exit_code: null,
      elapsed: '0:00',
      nodes: null,
      active: true,
      run_dir: '/w/runs/a',
      log: '/w/runs/a/slurm-1234.out',
    },
    {
      job_id: '1235',
      state: 'RUNNING',
      source: 'squeue',
      reason: 'None',
      exit_code: null,
      elapsed: '1:02',
      nodes: 'node7',
      active: true,
      run_dir: '/w/runs/b',
      log: null,
    },
    {
      job_id: '1236',
      state: 'COMPLETED',
      source: 'sacct',
      reason: null,
      exit_code: '0:0',
      elapsed: '00:10:00',
      nodes: 'node7',
      active: false,
      run_dir: '/w/runs/c',
      log: '/l',
    },
    { job_id: 77, state: 'CANCELLED', active: false },
    { state: 'RUNNING' },
    'junk',
    null,
  ]);

  it('parses rows, skips junk, keeps the engine\'s "active"', () => {
    const rows = parseSlurmStatus(engineJson);
    assert.deepEqual(
      rows.map((r) => [r.jobId, r.state, r.active, r.runDir]),
      [
        ['1234', 'PENDING', true, '/w/runs/a'],
        ['1235', 'RUNNING', true, '/w/runs/b'],
        ['1236', 'COMPLETED', false, '/w/runs/c'],
        ['77', 'CANCELLED', false, undefined],
      ],
    );
    assert.equal(rows[0].reason, 'Resources');
    assert.equal(rows[1].log, undefined);
    assert.equal(rows[2].exitCode, '0:0');
  });

  it('a single object (status with a target) and broken output', () => {
    assert.equal(parseSlurmStatus('{"job_id": "9", "state": "RUNNING"}')[0].active, true);
    assert.deepEqual(parseSlurmStatus(''), []);
    assert.deepEqual(parseSlurmStatus('Traceback (most recent call last):'), []);
    assert.deepEqual(parseSlurmStatus('42'), []);
  });

  it('labels: queued / running (slurm ID); tree description', () => {
    const [pending, running, done] = parseSlurmStatus(engineJson);
    assert.equal(slurmLabel(pending), 'queued (slurm 1234)');
    assert.equal(slurmLabel(running), 'running (slurm 1235)');
    assert.equal(slurmLabel(done), 'completed (slurm 1236)');
    assert.equal(slurmRunStatus(pending), 'queued');
    assert.equal(slurmRunStatus(running), 'running');
    const run: RunInfo = { id: 'a', dir: '/w/runs/a', status: 'queued' };
    assert.equal(runDescription(run, undefined, pending), 'queued (slurm 1234)');
    assert.equal(
      runDescription({ ...run, status: 'running' }, { step: 3, loss: 2 }, running),
      'running (slurm 1235) · step 3 · loss 2.000',
    );
    // Once Slurm is done with the job, run.json's own status speaks.
    assert.equal(runDescription({ ...run, status: 'done' }, undefined, done), '');
    assert.equal(
      runDescription({ ...run, status: 'queued' }, undefined, { ...done, state: 'FAILED', active: false }),
      'failed (slurm 1236)',
    );
  });
});

/** A fake clock and timer queue, so the poller's schedule is observable. */
function fakeTimers() {
  let now = 0;
  const timers: { at: number; fn: () => void; id: number }[] = [];
  let next = 1;
  return {
    now: () => now,
    setTimer: (fn: () => void, ms: number) => {
      const t = { at: now + ms, fn, id: next++ };
      timers.push(t);
      return t.id;
    },
    clearTimer: (id: unknown) => {
      const i = timers.findIndex((t) => t.id === id);
      if (i >= 0) timers.splice(i, 1);
    },
    pending: () => timers.length,
    nextDelay: () => (timers.length ? Math.min(...timers.map((t) => t.at)) - now : undefined),
    /** Runs the earliest timer; resolves once the poll it started has finished. */
    async fire(): Promise<void> {
      timers.sort((a, b) => a.at - b.at);
      const t = timers.shift();
      if (!t) throw new Error('no timer');
      now = t.at;
      t.fn();
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    },
  };
}

const job = (id: string, active: boolean): SlurmJobState => ({
  jobId: id,
  state: active ? 'RUNNING' : 'COMPLETED',
  active,
  runDir: `/r/${id}`,
});

describe('Slurm status poller', () => {
  it('polls while a job is active, at the interval, and stops when nothing is pending', async () => {
    const clock = fakeTimers();
    const answers = [[job('1', true)], [job('1', true)], [job('1', false)]];
    let calls = 0;
    const updates: number[] = [];
    const poller = new SlurmPoller({
      fetch: async () => answers[calls++] ?? [],
      trusted: () => true,
      onUpdate: (s) => updates.push(s.length),
      intervalMs: 10_000,
      ...clock,
    });
    poller.kick();
    assert.equal(clock.nextDelay(), 0); // first poll at once
    await clock.fire();
    assert.equal(calls, 1);
    assert.equal(clock.nextDelay(), 10_000);
    poller.kick(); // already scheduled: no second timer
    assert.equal(clock.pending(), 1);
    await clock.fire();
    await clock.fire();
    assert.equal(calls, 3);
    assert.equal(clock.pending(), 0, 'no timer left once no job is active');
    assert.equal(poller.polling, false);
    assert.deepEqual(poller.current(), [job('1', false)]);
    assert.deepEqual(updates, [1, 1, 1]);
    // A later kick (a new submission) is rate-limited to the interval since the last poll.
    poller.kick();
    assert.equal(clock.nextDelay(), 10_000);
    await clock.fire();
    assert.equal(calls, 4);
    assert.equal(clock.pending(), 0);
    poller.dispose();
  });

  it('starts no process in Restricted Mode', async () => {
    const clock = fakeTimers();
    let calls = 0;
    const poller = new SlurmPoller({
      fetch: async () => (calls++, [job('1', true)]),
      trusted: () => false,
      onUpdate: () => undefined,
      ...clock,
    });
    poller.kick();
    await poller.poll();
    assert.equal(calls, 0);
    assert.equal(clock.pending(), 0);
  });

  it('a failed poll keeps the last answer; dispose stops the schedule', async () => {
    const clock = fakeTimers();
    let fail = false;
    const poller = new SlurmPoller({
      fetch: async () => {
        if (fail) throw new Error('squeue: timeout');
        return [job('1', true)];
      },
      trusted: () => true,
      onUpdate: () => undefined,
      ...clock,
    });
    poller.kick();
    await clock.fire();
    fail = true;
    await clock.fire();
    assert.deepEqual(poller.current(), [job('1', true)]);
    assert.equal(clock.pending(), 1); // still pending as far as we know: retry
    poller.dispose();
    assert.equal(clock.pending(), 0);
  });
});

describe('job records on disk', () => {
  it('no records: no status process; records without run.json: one poll is due', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'moelab-records '));
    fs.mkdirSync(path.join(root, 'plain'));
    fs.writeFileSync(path.join(root, 'plain', 'run.json'), '{}');
    assert.equal(await hasSlurmRecords(root), false);
    assert.equal(await hasSlurmRecords(path.join(root, 'missing')), false);
    // A local run never starts Python for Slurm status.
    assert.deepEqual(await fetchSlurmStatus('/nonexistent/python', [root], root), []);
    fs.writeFileSync(path.join(root, 'plain', 'slurm.json'), '{"job_id": "1"}');
    assert.equal(await hasSlurmRecords(root), true);
    assert.equal(await hasRecordsWithoutRun(root), false);
    fs.mkdirSync(path.join(root, '.slurm', 'exp'), { recursive: true });
    fs.writeFileSync(path.join(root, '.slurm', 'exp', 'slurm.json'), '{"job_id": "2"}');
    assert.equal(await hasRecordsWithoutRun(root), true);
    fs.rmSync(root, { recursive: true, force: true });
  });
});

/** Null when jobs can run here, else why not (as engine/tests/test_slurm.py decides). */
function slurmUnusable(): string | null {
  if (!HAVE_VENV) return NO_VENV_REASON;
  const sinfo = spawnSync('sinfo', ['-h', '-o', '%t'], { encoding: 'utf8', timeout: 20_000 });
  if (sinfo.error)
    return `no Slurm on this machine (sinfo: ${sinfo.error.message}); scripts/slurm-local.sh starts a local one`;
  const states = sinfo.stdout.split(/\s+/).filter(Boolean);
  if (
    sinfo.status !== 0 ||
    !states.some((s) => ['idle', 'mix', 'alloc', 'comp'].includes(s.replace(/[*~#]+$/, '')))
  ) {
    return `Slurm has no usable node (sinfo: ${sinfo.stderr.trim() || states.join(' ') || 'nothing'}); run scripts/slurm-local.sh`;
  }
  return null;
}

const TINY_TRAIN = {
  steps: 3,
  batch_size: 2,
  warmup_steps: 1,
  log_every: 1,
  eval_every: 100,
  eval_batches: 1,
  ckpt_every: 3,
  threads: 1,
  device: 'cpu',
  model: {
    vocab_size: 256,
    hidden_size: 16,
    intermediate_size: 32,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    num_key_value_heads: 2,
    max_position_embeddings: 32,
    eos_token_id: 0,
  },
  data: { seq_len: 8, synthetic_train_chars: 4000, synthetic_eval_chars: 1000 },
};

describe('against a real Slurm (scripts/slurm-local.sh)', () => {
  const reason = slurmUnusable();
  it(
    "script → edit → submit → status → log → cancel, with the extension's argument arrays",
    { skip: reason ?? false, timeout: 300_000 },
    async () => {
      const ws = fs.mkdtempSync(path.join(os.tmpdir(), "moelab slurm ws $(x) 'q' "));
      const env = { ...process.env, OMP_NUM_THREADS: '1', PYTHONPATH: path.join(REPO, 'engine') };
      const moelab = (args: string[], timeout = 120_000) => {
        const inv = engineInvocation(PYTHON, args);
        const r = spawnSync(inv.command, inv.args, {
          cwd: ws,
          env: { ...env, ...inv.env },
          encoding: 'utf8',
          timeout,
        });
        assert.equal(r.status, 0, `moelab ${args.join(' ')}: ${r.stderr}`);
        return r.stdout;
      };
      const status = async (active: boolean, id: string, timeoutMs = 150_000): Promise<SlurmJobState> => {
        const deadline = Date.now() + timeoutMs;
        let last: SlurmJobState | undefined;
        while (Date.now() < deadline) {
          last = (await fetchSlurmStatus(PYTHON, ['runs'], ws)).find((s) => s.jobId === id);
          if (last && last.active === active) return last;
          await new Promise((r) => setTimeout(r, 1000));
        }
        assert.fail(`job ${id} never ${active ? 'active' : 'done'} (last: ${JSON.stringify(last)})`);
      };
      const cfgDir = path.join(ws, 'my configs');
      fs.mkdirSync(cfgDir);
      const settings = { time: '00:05:00', partition: 'debug' };

      // 1. A tiny training job, submitted unedited: runs to the end; log --follow ends with it.
      const train = path.join(cfgDir, 'tiny.json');
      fs.writeFileSync(train, JSON.stringify({ ...TINY_TRAIN, run_id: 'tiny-ext', out: '../runs' }));
      const script = scriptPathFor(train);
      moelab(slurmScriptArgs(train, script, settings, ws));
      const text = fs.readFileSync(script, 'utf8');
      assert.match(text, /#SBATCH --time=00:05:00/);
      const runDir = path.join(ws, 'runs', 'tiny-ext');
      assert.equal(runDirOfScript(text), runDir);
      const jobId = moelab(slurmSubmitScriptArgs(script, ws)).trim();
      assert.match(jobId, /^\d+$/);
      const log = moelab(slurmLogArgs(runDir, ws), 200_000);
      assert.match(log, new RegExp(`moelab: job ${jobId} on `));
      const done = await status(false, jobId);
      assert.equal(done.state, 'COMPLETED', JSON.stringify(done));
      assert.equal(done.runDir, runDir);
      assert.equal(JSON.parse(fs.readFileSync(path.join(runDir, 'run.json'), 'utf8')).status, 'done');

      // 2. An edited script (the user's change is what runs), cancelled while it sleeps.
      const sleeper = path.join(cfgDir, 'sleepy.json');
      fs.writeFileSync(sleeper, JSON.stringify({ ...TINY_TRAIN, run_id: 'sleepy-ext', out: '../runs' }));
      const script2 = scriptPathFor(sleeper);
      moelab(slurmScriptArgs(sleeper, script2, settings, ws));
      const edited = fs
        .readFileSync(script2, 'utf8')
        .replace(/^"\$PYTHON" -m moelab .*$/m, 'echo edited-by-user; sleep 300');
      assert.match(edited, /edited-by-user/);
      fs.writeFileSync(script2, edited);
      const job2 = moelab(slurmSubmitScriptArgs(script2, ws)).trim();
      const runDir2 = path.join(ws, 'runs', 'sleepy-ext');
      const active = await status(true, job2);
      assert.ok(
        ['queued', 'running'].some((w) => slurmLabel(active).startsWith(w)),
        slurmLabel(active),
      );
      moelab(slurmCancelArgs(runDir2, ws));
      const cancelled = await status(false, job2);
      assert.equal(cancelled.state, 'CANCELLED', JSON.stringify(cancelled));
      fs.rmSync(ws, { recursive: true, force: true });
    },
  );
});
