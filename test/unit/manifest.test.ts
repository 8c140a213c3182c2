import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

const root = path.resolve(import.meta.dirname, '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const c = pkg.contributes;

function sources(dir: string): string {
  return fs
    .readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => fs.readFileSync(path.join(e.parentPath, e.name), 'utf8'))
    .join('\n');
}

describe('package.json manifest', () => {
  it('declares the palette commands of ARCHITECTURE §6 under "MoE Lab", with Run Demo as moelab.runDemo', () => {
    const ids = c.commands.map((x: { command: string }) => x.command);
    for (const id of [
      'newExperiment',
      'runExperiment',
      'runDemo',
      'upcycle',
      'openDashboard',
      'openRouterPanel',
      'compareRuns',
      'stopRun',
      'inspectRouting',
      'exportCheckpoint',
      'installEngine',
      'refresh',
    ]) {
      assert.ok(ids.includes(`moelab.${id}`), id);
    }
    for (const cmd of c.commands) assert.equal(cmd.category, 'MoE Lab');
    assert.equal(
      c.commands.find((x: { command: string }) => x.command === 'moelab.runDemo').title,
      'Run Demo',
    );
  });

  it('every declared command is registered by the extension (inspectRouting by the inspector)', () => {
    const src = sources(path.join(root, 'extension', 'src'));
    for (const { command } of c.commands) {
      if (command === 'moelab.inspectRouting') continue;
      assert.match(src, new RegExp(`registerCommand\\(\\s*'${command.replace('.', '\\.')}'`), command);
    }
  });

  it('menus and welcome content only reference declared commands or built-ins', () => {
    const ids = new Set(c.commands.map((x: { command: string }) => x.command));
    for (const items of Object.values(c.menus) as { command: string }[][])
      for (const m of items) assert.ok(ids.has(m.command), m.command);
    const welcome = c.viewsWelcome.map((w: { contents: string }) => w.contents).join('\n');
    assert.match(welcome, /\[Run the demo\]\(command:moelab\.runDemo\)/);
  });

  it('activation is lazy and trust and extension kind are declared', () => {
    assert.ok(!pkg.activationEvents.includes('*'));
    for (const e of [
      'onView:moelab.runs',
      'onView:moelab.checkpoints',
      'workspaceContains:**/runs/*/run.json',
      'workspaceContains:**/*.moelab.json',
      'onTaskType:moelab',
      'onCommand:moelab.runDemo',
    ]) {
      assert.ok(pkg.activationEvents.includes(e), e);
    }
    assert.equal(pkg.capabilities.untrustedWorkspaces.supported, 'limited');
    assert.deepEqual(pkg.extensionKind, ['workspace']);
    const launching = [
      'moelab.runDemo',
      'moelab.runExperiment',
      'moelab.upcycle',
      'moelab.exportCheckpoint',
      'moelab.installEngine',
    ];
    for (const id of launching)
      assert.equal(
        c.commands.find((x: { command: string }) => x.command === id).enablement,
        'isWorkspaceTrusted',
        id,
      );
  });

  it('files the manifest points at exist and the schema ships in the vsix', () => {
    assert.equal(c.jsonValidation[0].fileMatch, '*.moelab.json');
    assert.ok(fs.existsSync(path.join(root, c.jsonValidation[0].url)));
    for (const step of c.walkthroughs[0].steps)
      assert.ok(fs.existsSync(path.join(root, step.media.markdown)), step.media.markdown);
    assert.ok(fs.existsSync(path.join(root, c.viewsContainers.activitybar[0].icon)));
    const ignore = fs.readFileSync(path.join(root, '.vscodeignore'), 'utf8');
    assert.match(ignore, /^!engine\/moelab\/schema\/experiment\.schema\.json$/m);
    assert.match(ignore, /^engine\/tests\/\*\*$/m);
    assert.match(ignore, /^\*\*\/\*\.map$/m);
  });

  it('settings: pythonPath, runsDirectories default ["runs"], device, Slurm', () => {
    const p = c.configuration.properties;
    assert.equal(p['moelab.pythonPath'].type, 'string');
    assert.deepEqual(p['moelab.runsDirectories'].default, ['runs']);
    assert.ok(p['moelab.device'] && p['moelab.slurm.partition'] && p['moelab.slurm.gpusPerNode']);
    assert.equal(c.taskDefinitions[0].type, 'moelab');
  });
});
