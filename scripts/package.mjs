// Builds one platform-specific .vsix per target with @vscode/vsce.
//
//   npm run package                       all targets onnxruntime-node ships binaries for
//   npm run package -- --target linux-x64 one target
//   npm run package -- --target host      this machine's target (what `make demo` uses)
//
// onnxruntime-node stays outside the bundle (native addon), so each .vsix carries
// node_modules/onnxruntime-node with only its own platform's binaries, plus its one runtime
// dependency, onnxruntime-common. The pruning happens in a staging copy under
// out/package-staging/<target>; node_modules itself is never touched.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));

/** vsce target → onnxruntime-node bin folder (bin/napi-v6/<platform>/<arch>). */
const TARGETS = {
  'linux-x64': 'linux/x64',
  'linux-arm64': 'linux/arm64',
  'darwin-arm64': 'darwin/arm64',
  'win32-x64': 'win32/x64',
  'win32-arm64': 'win32/arm64',
};

/** This machine's vsce target: node's platform and arch names are vsce's (linux-x64, darwin-arm64, win32-x64, ...). */
function hostTarget() {
  const t = `${process.platform}-${process.arch}`;
  if (!(t in TARGETS)) {
    console.error(
      `package: this machine is ${t}, for which onnxruntime-node ships no binary; pass --target (${Object.keys(TARGETS).join(', ')})`,
    );
    process.exit(2);
  }
  return t;
}

function parseTargets(argv) {
  const out = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--target' || a === '-t') out.push(...(argv[++i] ?? '').split(','));
    else if (a.startsWith('--target=')) out.push(...a.slice('--target='.length).split(','));
  }
  const list = out.filter(Boolean).map((t) => (t === 'host' ? hostTarget() : t));
  for (const t of list) {
    if (!(t in TARGETS)) {
      console.error(`package: unknown target ${t}; known: host, ${Object.keys(TARGETS).join(', ')}`);
      process.exit(2);
    }
  }
  return list.length ? list : Object.keys(TARGETS);
}

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`package: ${path.basename(cmd)} ${args.join(' ')} failed (${r.status ?? r.signal})`);
    process.exit(r.status || 1);
  }
}

function copy(src, dst, filter = () => true) {
  if (!fs.existsSync(src)) return;
  fs.cpSync(src, dst, {
    recursive: true,
    filter: (s) => filter(path.relative(src, s).split(path.sep).join('/')),
  });
}

/** A package's folder, nested under `from` or hoisted to the root (exports maps hide package.json from require.resolve). */
function pkgDir(name, from = root) {
  for (let d = from; ; d = path.dirname(d)) {
    const p = path.join(d, 'node_modules', name);
    if (fs.existsSync(path.join(p, 'package.json'))) return p;
    if (d === path.dirname(d)) throw new Error(`package: ${name} is not installed; run npm ci`);
  }
}

const noMaps = (rel) => !rel.endsWith('.map');

function stage(target) {
  const dir = path.join(root, 'out', 'package-staging', target);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  // vsce collects node_modules only through `npm list --production`: the staged manifest
  // declares just the one external runtime dependency, the bundle holds everything else.
  const ortVersion = JSON.parse(
    fs.readFileSync(path.join(pkgDir('onnxruntime-node'), 'package.json'), 'utf8'),
  ).version;
  fs.writeFileSync(
    path.join(dir, 'package.json'),
    JSON.stringify(
      { ...pkg, dependencies: { 'onnxruntime-node': ortVersion }, devDependencies: {} },
      null,
      2,
    ),
  );
  for (const f of ['README.md', 'CHANGELOG.md', 'LICENSE', 'LICENSE.md', '.vscodeignore']) {
    if (fs.existsSync(path.join(root, f))) fs.copyFileSync(path.join(root, f), path.join(dir, f));
  }
  copy(path.join(root, 'dist'), path.join(dir, 'dist'), (rel) => noMaps(rel) && !rel.endsWith('.vsix'));
  copy(path.join(root, 'media'), path.join(dir, 'media'));
  // The engine's sources ride along (no tests, caches or dot-folders) so "Install Engine" works offline (pip install <ext>/engine).
  copy(
    path.join(root, 'engine'),
    path.join(dir, 'engine'),
    (rel) => !/(^|\/)(tests|__pycache__|\.[^/]+|[^/]*\.egg-info)(\/|$)/.test(rel) && !rel.endsWith('.pyc'),
  );

  const ort = pkgDir('onnxruntime-node');
  const keepBin = `bin/napi-v6/${TARGETS[target]}`;
  copy(ort, path.join(dir, 'node_modules', 'onnxruntime-node'), (rel) => {
    if (rel === '' || rel === 'package.json' || rel === 'dist' || rel === 'bin' || rel === 'bin/napi-v6')
      return true;
    if (rel.startsWith('dist/')) return rel.endsWith('.js') || rel.endsWith('.d.ts');
    if (rel.startsWith('bin/napi-v6/')) return keepBin.startsWith(rel) || rel.startsWith(keepBin + '/');
    return /^(LICENSE|ThirdPartyNotices)/i.test(rel);
  });
  const common = pkgDir('onnxruntime-common', ort);
  copy(
    common,
    path.join(dir, 'node_modules', 'onnxruntime-common'),
    (rel) =>
      rel === '' ||
      rel === 'package.json' ||
      rel === 'dist' ||
      (rel.startsWith('dist/cjs') && noMaps(rel)) ||
      /^LICENSE/i.test(rel),
  );
  // Its other dependencies (adm-zip, global-agent) only serve its download-on-install script.
  const ortPkgFile = path.join(dir, 'node_modules', 'onnxruntime-node', 'package.json');
  const ortPkg = JSON.parse(fs.readFileSync(ortPkgFile, 'utf8'));
  fs.writeFileSync(
    ortPkgFile,
    JSON.stringify(
      {
        ...ortPkg,
        dependencies: { 'onnxruntime-common': ortPkg.dependencies['onnxruntime-common'] },
        scripts: {},
      },
      null,
      2,
    ),
  );
  if (
    !fs.existsSync(path.join(dir, 'node_modules', 'onnxruntime-node', keepBin, 'onnxruntime_binding.node'))
  ) {
    console.error(`package: node_modules/onnxruntime-node/${keepBin} is missing; run npm ci`);
    process.exit(1);
  }
  return dir;
}

const targets = parseTargets(process.argv.slice(2));
run(process.execPath, ['esbuild.mjs', '--production'], root);
const vsce = path.join(pkgDir('@vscode/vsce'), 'vsce');
for (const target of targets) {
  const dir = stage(target);
  const out = path.join(root, 'dist', `${pkg.name}-${target}-${pkg.version}.vsix`);
  run(
    process.execPath,
    // --no-rewrite-relative-links: the README links docs/ and engine/ files by relative path; with no
    // repository URL vsce would refuse to package rather than leave them relative.
    [
      vsce,
      'package',
      '--target',
      target,
      '--dependencies',
      '--allow-missing-repository',
      '--no-rewrite-relative-links',
      '--skip-license',
      '--out',
      out,
    ],
    dir,
  );
  const mb = fs.statSync(out).size / 2 ** 20;
  console.log(`package: ${path.relative(root, out)} ${mb.toFixed(1)} MiB`);
}
fs.rmSync(path.join(root, 'out', 'package-staging'), { recursive: true, force: true });
