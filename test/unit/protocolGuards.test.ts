// The runtime guards (webview/src/protocolGuards.ts) checked against the types they guard
// (webview/src/protocol.ts), read with the TypeScript compiler: for every message of every
// direction and every persisted state, a value built from its declared type is accepted, and
// dropping any required field or giving any field a value its type does not admit, at any depth,
// is rejected. A message or field added to protocol.ts without its check fails here.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import ts from 'typescript';
import * as guards from '../../webview/src/protocolGuards';

const PROTOCOL = path.resolve('webview', 'src', 'protocol.ts');
const program = ts.createProgram([PROTOCOL], { strict: true, noEmit: true, target: ts.ScriptTarget.ES2022 });
const checker = program.getTypeChecker();
const source = program.getSourceFile(PROTOCOL)!;

function declared(name: string): ts.Type {
  for (const s of source.statements)
    if ((ts.isInterfaceDeclaration(s) || ts.isTypeAliasDeclaration(s)) && s.name.text === name)
      return checker.getTypeAtLocation(s.name);
  throw new Error(`protocol.ts has no ${name}`);
}

/**
 * What types cannot say: the guards' value rules that a value built from the types alone would
 * break. Keyed by "Interface.field"; each gets the value built from the type.
 */
const CONSTRAINTS: Record<string, (built: unknown) => unknown> = {
  // Colours reach a style attribute: only hex or hsl().
  'RunSummary.color': () => '#1f77b4',
  'ResultsModel.color': () => 'hsl(210, 60%, 50%)',
  // A model has a perplexity for each of the document's domains and their average.
  'ResultsModel.ppl': (built) => ({ ...(built as object), average: (built as Record<string, unknown>).x }),
};

interface Slot {
  path: (string | number)[];
  where: string;
  type: ts.Type;
  required: boolean;
}

const nameOf = (t: ts.Type): string => t.aliasSymbol?.name ?? t.getSymbol()?.name ?? checker.typeToString(t);
const isNullish = (t: ts.Type): boolean => (t.flags & (ts.TypeFlags.Null | ts.TypeFlags.Undefined)) !== 0;

/** A value of type `t` (optional fields too when `full`), recording every field it holds in `slots`. */
function build(t: ts.Type, at: (string | number)[], slots: Slot[], full: boolean): unknown {
  if (t.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return 1;
  if (t.isUnion()) {
    // Booleans are true | false; otherwise the first member that is a value, not null.
    if (t.flags & ts.TypeFlags.Boolean) return true;
    return build(t.types.find((m) => !isNullish(m)) ?? t.types[0], at, slots, full);
  }
  if (t.isStringLiteral() || t.isNumberLiteral()) return t.value;
  if (t.flags & ts.TypeFlags.BooleanLiteral) return checker.typeToString(t) === 'true';
  if (t.flags & ts.TypeFlags.String) return 'x';
  if (t.flags & ts.TypeFlags.Number) return 1;
  if (t.flags & ts.TypeFlags.Null) return null;
  if (checker.isArrayType(t)) {
    const [element] = checker.getTypeArguments(t as ts.TypeReference);
    return [build(element, [...at, 0], slots, full)];
  }
  if (nameOf(t) === 'Float64Array') return new Float64Array([1]);
  const index = checker.getIndexInfosOfType(t)[0];
  if (index) return { x: build(index.type, [...at, 'x'], slots, full) };
  const out: Record<string, unknown> = {};
  for (const p of checker.getPropertiesOfType(t)) {
    const required = !(p.flags & ts.SymbolFlags.Optional);
    if (!required && !full) continue;
    const type = checker.getNonNullableType(checker.getTypeOfSymbol(p));
    const declaredType = checker.getTypeOfSymbol(p);
    const where = `${nameOf(t)}.${p.name}`;
    slots.push({ path: [...at, p.name], where, type: required ? declaredType : type, required });
    const value = build(required ? declaredType : type, [...at, p.name], slots, full);
    out[p.name] = CONSTRAINTS[where] ? CONSTRAINTS[where](value) : value;
  }
  return out;
}

/** Whether a value of `t` may be `v` (by kind; the guards' value rules are not modelled). */
function admits(t: ts.Type, v: unknown): boolean {
  if (t.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return true;
  if (t.isUnion()) return t.types.some((m) => admits(m, v));
  if (t.isStringLiteral() || t.isNumberLiteral()) return v === t.value;
  if (t.flags & ts.TypeFlags.BooleanLiteral) return v === (checker.typeToString(t) === 'true');
  if (t.flags & ts.TypeFlags.String) return typeof v === 'string';
  if (t.flags & ts.TypeFlags.Number) return typeof v === 'number';
  if (t.flags & ts.TypeFlags.Null) return v === null;
  if (t.flags & ts.TypeFlags.Undefined) return v === undefined;
  if (checker.isArrayType(t)) return Array.isArray(v);
  if (nameOf(t) === 'Float64Array') return v instanceof Float64Array;
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

const WRONG: unknown[] = ['\u0000not-this', 0.5, true, null, {}, []];

function setAt(root: unknown, at: (string | number)[], value: unknown, remove = false): unknown {
  const copy = structuredClone(root);
  let node = copy as Record<string | number, unknown>;
  for (const k of at.slice(0, -1)) node = node[k] as Record<string | number, unknown>;
  const last = at[at.length - 1];
  if (remove) delete node[last];
  else node[last] = value;
  return copy;
}

/** Every member of a union type of protocol.ts, with the guard that receives it. */
const RECEIVERS: { union: string; parse: (v: unknown) => unknown }[] = [
  { union: 'HostToDashboardMessage', parse: guards.parseHostToDashboard },
  { union: 'HostToRouterMessage', parse: guards.parseHostToRouter },
  { union: 'HostToResultsMessage', parse: guards.parseHostToResults },
  { union: 'WebviewToHostMessage', parse: guards.parseWebviewToHost },
  {
    union: 'PanelState',
    parse: (v) => guards.parseDashboardState(v) ?? guards.parseRouterState(v) ?? guards.parseResultsState(v),
  },
];

const members = (union: string): ts.Type[] => {
  const t = declared(union);
  return t.isUnion() ? t.types : [t];
};

describe('protocol guards against protocol.ts', () => {
  it('every message interface of protocol.ts is in a union a guard receives', () => {
    const received = new Set(RECEIVERS.flatMap((r) => members(r.union).map(nameOf)));
    const messages = source.statements
      .filter(ts.isInterfaceDeclaration)
      .map((s) => s.name.text)
      .filter((n) => n.endsWith('Message') || n.endsWith('State'));
    assert.ok(messages.length >= 15, messages.join());
    assert.deepEqual(
      messages.filter((n) => !received.has(n)),
      [],
    );
  });

  for (const { union, parse } of RECEIVERS) {
    for (const member of members(union)) {
      const name = nameOf(member);
      it(`${union} · ${name}: accepted as declared, rejected without a required field or with a wrong kind`, () => {
        const minimal = build(member, [], [], false);
        assert.ok(parse(minimal) !== undefined, `${name} without its optional fields is rejected`);
        const slots: Slot[] = [];
        const full = build(member, [], slots, true);
        assert.ok(parse(full) !== undefined, `${name} with every field is rejected: ${JSON.stringify(full)}`);
        assert.ok(slots.length > 0 || name === 'ReadyMessage');
        for (const s of slots) {
          const at = s.path.join('.');
          if (s.required)
            assert.equal(
              parse(setAt(full, s.path, undefined, true)),
              undefined,
              `${name}: missing ${at} (${s.where}) accepted`,
            );
          const wrong = WRONG.find((v) => !admits(s.type, v));
          if (wrong === undefined) continue; // unknown: anything goes
          assert.equal(
            parse(setAt(full, s.path, wrong)),
            undefined,
            `${name}: ${at} (${s.where}: ${checker.typeToString(s.type)}) = ${JSON.stringify(wrong)} accepted`,
          );
        }
      });
    }
  }

  it('a message of a type no union has is dropped by every receiver', () => {
    for (const { parse } of RECEIVERS) assert.equal(parse({ type: 'nope', panel: 'nope' }), undefined);
  });
});
