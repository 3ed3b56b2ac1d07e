/**
 * @file Tree-sitter grammar for ahtsgd's `.aht` recipe language.
 *
 * It mirrors grammar/aht.pest, the grammar the interpreter parses with: newlines separate
 * fields and declarations; inside brackets and parentheses and after a binary operator they
 * are free; `#` starts a comment. Numbers are read by src/scanner.c so that the literals the
 * interpreter rejects (too large for a float, or a whole number above 9e15) are errors here
 * too.
 */

/// Line breaks that may appear here without meaning anything.
const nls = ($) => repeat($._newline);

/// `open item (, item)* ,? close`, with free line breaks, as pest's lists and arguments.
function bracketed($, open, item, close) {
  return seq(
    open,
    nls($),
    optional(seq(item, nls($), repeat(seq(',', nls($), item, nls($))), optional(seq(',', nls($))))),
    close,
  );
}

module.exports = grammar({
  name: 'aht',

  extras: ($) => [/[ \t]/, $.comment],

  externals: ($) => [$.number, $.integer],

  word: ($) => $.identifier,

  reserved: {
    global: (_) => ['with', 'true', 'false'],
  },

  rules: {
    source_file: ($) =>
      seq(
        optional($._bom),
        nls($),
        optional(seq($._item, repeat(seq(repeat1($._newline), $._item)), nls($))),
      ),

    _bom: (_) => '\uFEFF',

    _newline: (_) => /\r?\n|\r/,

    comment: (_) => token(seq('#', /[^\r\n]*/)),

    _item: ($) => choice($.version, $.import, $.declaration),

    /// `version = 1`
    version: ($) => seq('version', '=', field('number', $.integer)),

    /// `import "common.aht"`
    import: ($) => seq('import', field('path', $.string)),

    /// `model NAME = BASE with { ... }`, `dataset NAME = KIND { ... }`, `experiment NAME { ... }`
    declaration: ($) =>
      seq(
        field('keyword', $.declaration_keyword),
        field('name', $.identifier),
        choice(
          seq('=', field('base', $.identifier), 'with', field('body', $.block)),
          seq('=', field('kind', $.identifier), optional(field('body', $.block))),
          field('body', $.block),
        ),
      ),

    declaration_keyword: (_) => choice('dataset', 'model', 'schedule', 'optimizer', 'experiment'),

    /// `{ field = value, ... }`: fields separated by commas or line breaks.
    block: ($) =>
      seq(
        '{',
        nls($),
        optional(seq($._entry, repeat(seq($._separator, $._entry)), optional($._separator))),
        '}',
      ),

    _separator: ($) => choice(seq(',', nls($)), repeat1($._newline)),

    _entry: ($) => choice($.zip, $.random, $.field),

    /// `name = value`, or `decl.field = value` inside an experiment.
    field: ($) => seq(field('path', $.path), '=', nls($), field('value', $._value)),

    /// A dot-separated field path. `zip` and `random` are names here, as pest reads them.
    path: ($) =>
      seq(
        choice($.identifier, alias('zip', $.identifier), alias('random', $.identifier)),
        repeat(seq('.', $.identifier)),
      ),

    /// `zip(a, b)`: the sweeps of these fields vary together.
    zip: ($) =>
      seq(
        'zip',
        '(',
        nls($),
        $.path,
        nls($),
        repeat(seq(',', nls($), $.path, nls($))),
        optional(seq(',', nls($))),
        ')',
      ),

    /// `random(n = 20, seed = 1) { lr = loguniform(1e-3, 1e-1) }`
    random: ($) => seq('random', field('arguments', $.arguments), field('body', $.block)),

    _value: ($) => choice($._expression, $.range),

    /// `a..b`
    range: ($) => seq(field('start', $._expression), '..', field('end', $._expression)),

    _expression: ($) => choice($.binary_expression, $.unary_expression, $._primary),

    binary_expression: ($) =>
      choice(
        ...[
          ['+', 1],
          ['-', 1],
          ['*', 2],
          ['/', 2],
        ].map(([operator, precedence]) =>
          prec.left(
            precedence,
            seq(
              field('left', $._expression),
              field('operator', operator),
              nls($),
              field('right', $._expression),
            ),
          ),
        ),
      ),

    unary_expression: ($) => prec(3, seq(field('operator', '-'), field('operand', $._expression))),

    _primary: ($) =>
      choice(
        $.quantity,
        $.string,
        $.boolean,
        $.list,
        $.identifier,
        $.call,
        $.nested_block,
        $.parenthesized,
      ),

    /// A number, optionally with a unit: `0.05`, `50 steps`, `2 epochs`.
    quantity: ($) => seq(field('value', $.number), optional(field('unit', $.unit))),

    unit: (_) => choice('steps', 'step', 'epochs', 'epoch'),

    /// `log(1e-3, 1e-1)`, `sweep(0.1, 0.2)`, `residual([...])`
    call: ($) => seq(field('function', $.identifier), field('arguments', $.arguments)),

    /// `power_iteration { iters = 20 }`: a kind with settings, as a value.
    nested_block: ($) => seq(field('kind', $.identifier), field('body', $.block)),

    parenthesized: ($) => seq('(', nls($), $._expression, nls($), ')'),

    list: ($) => bracketed($, '[', $._value, ']'),

    arguments: ($) => bracketed($, '(', choice($.named_argument, $._value), ')'),

    named_argument: ($) => seq(field('name', $.identifier), '=', nls($), field('value', $._value)),

    /// A double-quoted string with `\"`, `\\`, `\n` and `\t` escapes.
    string: (_) => token(seq('"', repeat(choice(/[^"\\\r\n]/, /\\["\\nt]/)), '"')),

    boolean: (_) => choice('true', 'false'),

    identifier: (_) => /[A-Za-z_][A-Za-z0-9_]*/,
  },
});
