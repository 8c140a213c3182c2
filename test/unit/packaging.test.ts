// What the .vsix must carry for the routing inspector to load onnxruntime-node at all.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';

describe('.vscodeignore', () => {
  it('ships the nested package.json files that make onnxruntime-common/dist/cjs CommonJS', () => {
    // onnxruntime-common's own package.json says "type": "module"; dist/cjs/package.json says
    // "commonjs". Leaving the latter out made the packaged inspector worker crash with
    // "exports is not defined in ES module scope" (found by the e2e test).
    const rules = fs
      .readFileSync('.vscodeignore', 'utf8')
      .split('\n')
      .map((l) => l.trim());
    const root = path.join('node_modules', 'onnxruntime-common');
    const nested = fs
      .readdirSync(path.join(root, 'dist'), { recursive: true })
      .map(String)
      .filter((f) => path.basename(f) === 'package.json' && f.startsWith('cjs'));
    assert.ok(nested.length > 0);
    for (const f of nested) {
      const rel = `node_modules/onnxruntime-common/dist/${f.split(path.sep).join('/')}`;
      assert.ok(rules.includes(`!${rel}`), `.vscodeignore must re-include ${rel}`);
    }
  });
});
