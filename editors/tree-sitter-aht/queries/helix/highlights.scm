; Highlighting for .aht recipes in Helix, whose themes use their own scope names
; (constant.numeric, variable.other.member, ...). The same patterns as ../highlights.scm.
; Helix gives the first matching pattern precedence, so the specific ones come first.

(import "import" @keyword.control.import)

(declaration
  name: (identifier) @type)

(declaration
  base: (identifier) @type)

(declaration
  kind: (identifier) @type)

(nested_block
  kind: (identifier) @type)

(field
  path: (path (identifier) @variable.other.member))

(named_argument
  name: (identifier) @variable.parameter)

(call
  function: (identifier) @function)

(declaration_keyword) @keyword

[
  "version"
  "with"
  "zip"
  "random"
] @keyword

(comment) @comment

(string) @string

(number) @constant.numeric
(integer) @constant.numeric

(boolean) @constant.builtin.boolean

(unit) @type.builtin

[
  "+"
  "-"
  "*"
  "/"
  ".."
  "="
] @operator

[
  "("
  ")"
  "["
  "]"
  "{"
  "}"
] @punctuation.bracket

[
  ","
  "."
] @punctuation.delimiter
