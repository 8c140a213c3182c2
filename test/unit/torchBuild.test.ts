import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  detectNvidia,
  newestCpuBuild,
  TORCH_CPU_INDEX,
  torchInstallArgs,
  torchPlan,
  torchVersionsArgs,
} from '../../extension/src/engine/torchBuild';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'moelab-torch-'));
}

describe('detectNvidia', () => {
  it('finds an executable nvidia-smi on PATH, and only an executable one', () => {
    const bin = tmp();
    const smi = path.join(bin, 'nvidia-smi');
    const noProc = (p: string) => p !== '/proc/driver/nvidia/version' && fs.existsSync(p);
    fs.writeFileSync(smi, '#!/bin/sh\n', { mode: 0o644 });
    assert.equal(
      detectNvidia({ platform: 'linux', pathVar: `/nonexistent:${bin}`, exists: noProc }).nvidia,
      false,
    );
    fs.chmodSync(smi, 0o755);
    const found = detectNvidia({ platform: 'linux', pathVar: `/nonexistent:${bin}`, exists: noProc });
    assert.equal(found.nvidia, true);
    assert.match(found.evidence, new RegExp(smi));
  });

  it('takes a loaded driver (/proc/driver/nvidia) without nvidia-smi', () => {
    const found = detectNvidia({
      platform: 'linux',
      pathVar: '',
      exists: (p) => p === '/proc/driver/nvidia/version',
    });
    assert.equal(found.nvidia, true);
    assert.match(found.evidence, /\/proc\/driver\/nvidia/);
  });

  it('says what it looked for when there is no GPU', () => {
    const none = detectNvidia({ platform: 'linux', pathVar: tmp(), exists: () => false });
    assert.deepEqual(none, { nvidia: false, evidence: 'no /proc/driver/nvidia and no nvidia-smi on PATH' });
  });

  it('agrees with this machine', () => {
    const real = detectNvidia({ platform: process.platform, pathVar: process.env.PATH ?? '' });
    const smi = spawnSync('nvidia-smi', ['-L']);
    const hasGpu = fs.existsSync('/proc/driver/nvidia/version') || smi.error === undefined;
    assert.equal(real.nvidia, hasGpu);
  });
});

describe('torchPlan', () => {
  const noGpu = { nvidia: false, evidence: 'no /proc/driver/nvidia and no nvidia-smi on PATH' };
  const gpu = { nvidia: true, evidence: '/usr/bin/nvidia-smi is present' };

  it('Linux without a GPU: the newest CPU build, with PyTorch CPU index added to the user indexes', () => {
    const plan = torchPlan('linux', noGpu);
    assert.equal(plan.build, 'cpu');
    assert.equal(plan.pinCpuBuild, true);
    assert.match(plan.reason, /^CPU build of torch: no \/proc\/driver\/nvidia/);
    assert.deepEqual(torchInstallArgs(plan, '2.13.0+cpu'), [
      '-m',
      'pip',
      'install',
      'torch==2.13.0+cpu',
      '--extra-index-url',
      TORCH_CPU_INDEX,
    ]);
    assert.deepEqual(torchVersionsArgs(plan), [
      '-m',
      'pip',
      'index',
      'versions',
      'torch',
      '--extra-index-url',
      TORCH_CPU_INDEX,
    ]);
  });

  it('Linux with an NVIDIA GPU: PyPI torch (the CUDA build), saying why', () => {
    const plan = torchPlan('linux', gpu);
    assert.equal(plan.build, 'cuda');
    assert.equal(plan.pinCpuBuild, false);
    assert.equal(plan.reason, 'CUDA build of torch: /usr/bin/nvidia-smi is present.');
    assert.deepEqual(torchInstallArgs(plan), ['-m', 'pip', 'install', 'torch']);
  });

  it('macOS and Windows: PyPI torch without a GPU; Windows CUDA from PyTorch index', () => {
    assert.deepEqual(torchInstallArgs(torchPlan('darwin', gpu)), ['-m', 'pip', 'install', 'torch']);
    assert.deepEqual(torchInstallArgs(torchPlan('win32', noGpu)), ['-m', 'pip', 'install', 'torch']);
    const win = torchPlan('win32', gpu);
    assert.equal(win.build, 'cuda');
    assert.match(
      torchInstallArgs(win).join(' '),
      /--extra-index-url https:\/\/download\.pytorch\.org\/whl\/cu\d+$/,
    );
  });
});

describe('newestCpuBuild', () => {
  it('picks the newest +cpu release by number, not by string', () => {
    const out = 'torch (2.14.1)\nAvailable versions: 2.14.1, 2.9.0+cpu, 2.10.0+cpu, 2.10.0, 2.1.2+cpu\n';
    assert.equal(newestCpuBuild(out), '2.10.0+cpu');
  });

  it('is undefined when no +cpu build is offered or the output is not pip', () => {
    assert.equal(newestCpuBuild('torch (2.14.1)\nAvailable versions: 2.14.1, 2.13.0\n'), undefined);
    assert.equal(newestCpuBuild('ERROR: No matching distribution found for torch'), undefined);
    assert.equal(newestCpuBuild('Available versions: 2.13.0+cu121\n'), undefined);
  });

  it("reads real pip's `index versions` output", (t) => {
    const python = process.platform === 'win32' ? 'python' : 'python3';
    if (spawnSync(python, ['-m', 'pip', '--version']).status !== 0) return t.skip('no python3 with pip');
    // A find-links folder: pip lists candidates from the wheel names alone.
    const links = tmp();
    for (const v of ['2.14.1', '2.13.0+cpu', '2.9.0+cpu'])
      fs.writeFileSync(path.join(links, `torch-${v}-py3-none-any.whl`), '');
    const args = [
      ...torchVersionsArgs(torchPlan('linux', { nvidia: false, evidence: '' })),
      '--no-index',
      '--find-links',
      links,
    ];
    const env = { ...process.env, PIP_CONFIG_FILE: os.devNull, PIP_FIND_LINKS: '', PIP_RETRIES: '0' };
    const r = spawnSync(python, args, { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(newestCpuBuild(r.stdout), '2.13.0+cpu');
  });
});
