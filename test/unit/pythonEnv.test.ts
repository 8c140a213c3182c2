import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import {
  envPython,
  inPlaceInstall,
  inspectPython,
  parsePythonInfo,
  type PythonInfo,
  settingTarget,
  supportedPython,
} from '../../extension/src/engine/pythonEnv';

const systemPython =
  ['/usr/bin/python3', '/usr/local/bin/python3'].find((p) => fs.existsSync(p)) ?? 'python3';

function info(o: Partial<PythonInfo>): PythonInfo {
  return {
    version: [3, 11, 2],
    executable: '/usr/bin/python3',
    venv: false,
    externallyManaged: false,
    stdlib: '/usr/lib/python3.11',
    ...o,
  };
}

describe('inspectPython', () => {
  it('reads the marker of PEP 668 in the stdlib of a real interpreter', async () => {
    const base = await inspectPython(systemPython);
    assert.ok(base, `could not run ${systemPython}`);
    assert.ok(base.version[0] >= 3);
    const marker = fs.existsSync(path.join(base.stdlib, 'EXTERNALLY-MANAGED'));
    assert.equal(base.externallyManaged, marker && !base.venv);
  });

  it('a virtual environment over that interpreter is never externally managed, though it shares the stdlib', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'moelab-venv-'));
    const made = spawnSync(systemPython, ['-m', 'venv', '--without-pip', path.join(dir, 'env')]);
    if (made.status !== 0) return t.skip(`${systemPython} -m venv is not available`);
    const base = await inspectPython(systemPython);
    const env = await inspectPython(envPython(path.join(dir, 'env')));
    assert.ok(base && env);
    assert.equal(env.venv, true);
    assert.equal(env.externallyManaged, false);
    assert.equal(env.stdlib, base.stdlib);
    assert.deepEqual(inPlaceInstall(env, false), { allowed: true });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('is undefined for something that is not a Python', async () => {
    assert.equal(await inspectPython('/nonexistent/python3'), undefined);
    assert.equal(parsePythonInfo('Traceback (most recent call last):\n'), undefined);
    assert.equal(parsePythonInfo('{not json'), undefined);
  });
});

describe('inPlaceInstall', () => {
  it('never into an externally managed Python, even when the user chose it', () => {
    const r = inPlaceInstall(info({ externallyManaged: true }), true);
    assert.equal(r.allowed, false);
    assert.match(r.allowed ? '' : r.reason, /externally managed \(PEP 668\)/);
  });

  it('into a global Python only when the user chose it, and then with a confirmation', () => {
    const g = info({});
    assert.deepEqual(inPlaceInstall(g, false), {
      allowed: false,
      reason: '/usr/bin/python3 is not a virtual environment',
    });
    const chosen = inPlaceInstall(g, true);
    assert.equal(chosen.allowed, true);
    assert.match(chosen.allowed ? (chosen.confirm ?? '') : '', /global site-packages/);
  });

  it('into a virtual environment without asking twice', () => {
    assert.deepEqual(inPlaceInstall(info({ venv: true }), false), { allowed: true });
  });
});

describe('settingTarget', () => {
  it('writes where the value that would win is set', () => {
    assert.equal(
      settingTarget({ workspaceFolderValue: '/usr/bin/python3', workspaceValue: '/x' }, true),
      'workspaceFolder',
    );
    assert.equal(settingTarget({ workspaceValue: '/usr/bin/python3' }, true), 'workspace');
  });
  it('else globally for an environment in global storage, for the workspace otherwise', () => {
    assert.equal(settingTarget({}, true), 'global');
    assert.equal(settingTarget(undefined, false), 'workspace');
  });
});

describe('envPython and supportedPython', () => {
  it('bin/python on POSIX, Scripts\\python.exe on Windows', () => {
    assert.equal(envPython('/a/b env', 'linux'), '/a/b env/bin/python');
    assert.equal(envPython('C:\\x\\env', 'win32'), 'C:\\x\\env\\Scripts\\python.exe');
  });
  it('needs Python 3.10 or newer', () => {
    assert.equal(supportedPython(info({ version: [3, 9, 18] })), false);
    assert.equal(supportedPython(info({ version: [3, 10, 0] })), true);
    assert.equal(supportedPython(info({ version: [4, 0, 0] })), true);
  });
});
