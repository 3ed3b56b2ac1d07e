// The recipes the grammar tests read, found from the repository root as tests/tree_sitter.rs
// finds them: the shipped recipes, the accepted cases and every `aht` block of the docs.
'use strict';

const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..', '..', '..');

function files(dir, ext) {
  const full = path.join(root, dir);
  return fs
    .readdirSync(full)
    .filter((name) => name.endsWith(ext))
    .sort()
    .map((name) => path.join(full, name));
}

/** `[name, text]` of every `aht` block in docs/ and the README. */
function docBlocks() {
  const pages = [...files('docs', '.md'), path.join(root, 'README.md')];
  const out = [];
  for (const page of pages) {
    const text = fs.readFileSync(page, 'utf8');
    let at = 0;
    for (;;) {
      const start = text.indexOf('```aht\n', at);
      if (start < 0) break;
      const end = text.indexOf('```', start + 7);
      out.push([`${path.relative(root, page)}#${out.length + 1}`, text.slice(start + 7, end)]);
      at = end + 3;
    }
  }
  return out;
}

/** `[name, text]` of every recipe that parses. */
function accepted() {
  const out = docBlocks();
  for (const dir of ['recipes', 'tests/cases/parse/ok', 'tests/cases/check/ok', 'tests/cases/check/warn']) {
    for (const file of files(dir, '.aht')) out.push([path.relative(root, file), fs.readFileSync(file, 'utf8')]);
  }
  return out;
}

/** `[name, text]` of the cases the parser rejects. */
function rejected() {
  return files('tests/cases/parse/err', '.aht').map((f) => [path.relative(root, f), fs.readFileSync(f, 'utf8')]);
}

module.exports = { root, accepted, rejected };
