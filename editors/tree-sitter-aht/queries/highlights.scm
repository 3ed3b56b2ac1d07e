; Highlighting for .aht recipes. Later patterns take precedence in Neovim and the
; tree-sitter CLI, so the general ones come first.

(comment) @comment

(string) @string

(number) @number
(integer) @number

(boolean) @boolean

(unit) @type.builtin

[
  "version"
  "import"
  "with"
  "zip"
  "random"
] @keyword

(declaration_keyword) @keyword

(import "import" @keyword.import)

(declaration
  name: (identifier) @type.definition)

(declaration
  base: (identifier) @type)

(declaration
  kind: (identifier) @type)

(nested_block
  kind: (identifier) @type)

(field
  path: (path (identifier) @property))

(named_argument
  name: (identifier) @variable.parameter)

(call
  function: (identifier) @function.call)

[
  "+"
  "-"
  "*"
  "/"
  ".."
] @operator

"=" @operator

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
