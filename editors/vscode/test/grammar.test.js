// The TextMate grammar, run through the same tokenizer VS Code uses (vscode-textmate with
// vscode-oniguruma): nothing in an accepted recipe is marked invalid, what is wrong on sight
// in the rejected cases is, and each kind of token gets its scope.
'use strict';

const assert = require('assert');
const fs = require('fs');
const path = require('path');
const vsctm = require('vscode-textmate');
const oniguruma = require('vscode-oniguruma');
const { accepted, rejected } = require('./recipes');

const grammarPath = path.join(__dirname, '..', 'syntaxes', 'aht.tmLanguage.json');

async function loadGrammar() {
  const wasm = fs.readFileSync(require.resolve('vscode-oniguruma/release/onig.wasm'));
  await oniguruma.loadWASM(wasm.buffer.slice(wasm.byteOffset, wasm.byteOffset + wasm.byteLength));
  const registry = new vsctm.Registry({
    onigLib: Promise.resolve({
      createOnigScanner: (patterns) => new oniguruma.OnigScanner(patterns),
      createOnigString: (text) => new oniguruma.OnigString(text),
    }),
    loadGrammar: async (scope) =>
      scope === 'source.aht' ? vsctm.parseRawGrammar(fs.readFileSync(grammarPath, 'utf8'), grammarPath) : null,
  });
  return registry.loadGrammar('source.aht');
}

/** Every token of `text` as `{ line, text, scopes }`. */
function tokenize(grammar, text) {
  const out = [];
  let state = vsctm.INITIAL;
  text.split(/\r\n|\r|\n/).forEach((line, number) => {
    const result = grammar.tokenizeLine(line, state);
    for (const token of result.tokens) {
      out.push({ line: number + 1, text: line.slice(token.startIndex, token.endIndex), scopes: token.scopes });
    }
    state = result.ruleStack;
  });
  return out;
}

const invalid = (token) => token.scopes.some((scope) => scope.startsWith('invalid'));

async function main() {
  const grammar = await loadGrammar();
  let checks = 0;

  const ok = accepted();
  assert(ok.length > 40, `only ${ok.length} recipes found`);
  for (const [name, text] of ok) {
    for (const token of tokenize(grammar, text)) {
      assert(!invalid(token), `${name}:${token.line}: \`${token.text}\` marked ${token.scopes.join(' ')}`);
      checks++;
    }
  }

  // What a tokenizer can see without parsing: the checker names the rest.
  const onSight = ['bad_escape', 'curly_quotes', 'nbsp', 'unclosed_string'];
  const cases = rejected();
  for (const name of onSight) {
    const found = cases.find(([file]) => path.basename(file) === `${name}.aht`);
    assert(found, `no case ${name}`);
    const tokens = tokenize(grammar, found[1]);
    assert(tokens.some(invalid), `${found[0]}: nothing marked invalid`);
    checks++;
  }

  const sample = [
    'version = 2',
    'import "common.aht"  # shared "settings"',
    'model wide = mlp with { hidden = [64], dropout = true }',
    'schedule s = adaptive { sharpness = power_iteration { every = 50 steps } }',
    'experiment e {',
    '  model = wide',
    '  lr = log(1e-3, base = 10) * 2.5E+4',
    '  zip(lr, seed)',
    '  aht.sigma = sweep(0.1, 0.2)',
    '  seed = 0..3',
    '  path = "a\\"b # not a comment"',
    '}',
  ].join('\n');
  const tokens = tokenize(grammar, sample);
  const expected = [
    ['version', 'keyword.other.version.aht'],
    ['import', 'keyword.control.import.aht'],
    ['"common.aht"', 'string.quoted.double.aht'],
    ['# shared "settings"', 'comment.line.number-sign.aht'],
    ['model', 'keyword.declaration.aht'],
    ['wide', 'entity.name.type.aht'],
    ['mlp', 'entity.other.inherited-class.aht'],
    ['with', 'keyword.other.with.aht'],
    ['hidden', 'variable.other.property.aht'],
    ['64', 'constant.numeric.aht'],
    ['true', 'constant.language.boolean.aht'],
    ['power_iteration', 'entity.name.type.aht'],
    ['50', 'constant.numeric.aht'],
    ['steps', 'keyword.other.unit.aht'],
    ['log', 'entity.name.function.aht'],
    ['1e-3', 'constant.numeric.aht'],
    ['2.5E+4', 'constant.numeric.aht'],
    ['base', 'variable.other.property.aht'],
    ['zip', 'keyword.control.aht'],
    ['aht.sigma', 'variable.other.property.aht'],
    ['..', 'keyword.operator.range.aht'],
    ['\\"', 'constant.character.escape.aht'],
  ];
  for (const [text, scope] of expected) {
    assert(
      tokens.some((t) => t.text === text && t.scopes.includes(scope)),
      `\`${text}\` has no ${scope}: ${JSON.stringify(tokens.filter((t) => t.text === text))}`,
    );
    checks++;
  }
  // A field named like a declaration keyword stays a field.
  const field = tokens.find((t) => t.line === 6 && t.text === 'model');
  assert(field && field.scopes.includes('variable.other.property.aht'), JSON.stringify(field));
  // `#` inside a string starts no comment.
  assert(!tokens.some((t) => t.line === 11 && t.scopes.some((s) => s.startsWith('comment'))));
  checks += 2;

  console.log(`grammar: ${ok.length} recipes tokenized, ${checks} checks passed`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
