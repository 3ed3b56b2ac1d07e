// The external scanner of the .aht grammar: numbers and whole numbers.
//
// A regular expression could read the digits, but the interpreter also rejects literals it
// cannot represent (src/syntax/parse.rs), and the grammar should show those as errors too:
// a number that rounds to infinity as a 64-bit float, a whole number above 9e15 (the largest
// the checker accepts exactly), and a version above the largest 64-bit unsigned integer.
// The comparisons are on the decimal digits, so they do not depend on the C library or the
// locale.

#include "tree_sitter/parser.h"

#include <stdbool.h>
#include <string.h>

enum TokenType { NUMBER, INTEGER };

// The smallest decimal that rounds to infinity: halfway between the largest finite double
// and 2^1024, which round-to-nearest-even sends up. Its decimal exponent is 309 (it has 309
// digits before the point).
static const char OVERFLOW_DIGITS[] =
    "1797693134862315807937289714053034150799341327100378269361737789"
    "8044496829276475094664901797758720709633028641669288791094655554"
    "7851940402630657488671505820681908902000708383676273854845817711"
    "5317644757302700698555713669596228429148198608349364752927190741"
    "68444365510704342711559699508093042880177904174497792";
static const int OVERFLOW_EXPONENT = 309;

// 2^53 rounded down to the checker's limit for whole numbers, and the largest u64.
static const char WHOLE_LIMIT[] = "9000000000000000";
static const char VERSION_LIMIT[] = "18446744073709551615";

// Enough significant digits to decide every comparison above: a number that agrees with
// OVERFLOW_DIGITS on all of its digits is at least that large whatever follows.
#define KEPT_DIGITS 400

typedef struct {
  char digits[KEPT_DIGITS];
  int kept;
  // Digits of the integer part after the first significant one, counted even when not kept.
  long integer_digits;
  // Leading zeros of the fraction before the first significant digit (when the integer part
  // is zero).
  long leading_fraction_zeros;
  bool any_significant;
} Digits;

static void push(Digits *d, int32_t c, bool in_fraction) {
  if (!d->any_significant) {
    if (c == '0') {
      if (in_fraction) d->leading_fraction_zeros++;
      return;
    }
    d->any_significant = true;
  }
  if (!in_fraction) d->integer_digits++;
  if (d->kept < KEPT_DIGITS) d->digits[d->kept++] = (char)c;
}

static bool is_digit(int32_t c) { return c >= '0' && c <= '9'; }

// Whether the significant digits `d` (most significant first, `n` of them) are at least
// `limit` when both have the same number of digits before the point.
static bool at_least(const char *d, int n, const char *limit) {
  int m = (int)strlen(limit);
  for (int i = 0; i < m; i++) {
    char digit = i < n ? d[i] : '0';
    if (digit != limit[i]) return digit > limit[i];
  }
  return true;
}

// Whether a whole number with `d` as its digits (no leading zeros) is above `limit`.
static bool whole_above(const Digits *d, const char *limit) {
  long length = d->integer_digits;
  long m = (long)strlen(limit);
  if (length != m) return length > m;
  return memcmp(d->digits, limit, (size_t)m) > 0;
}

void *tree_sitter_aht_external_scanner_create(void) { return NULL; }

void tree_sitter_aht_external_scanner_destroy(void *payload) { (void)payload; }

unsigned tree_sitter_aht_external_scanner_serialize(void *payload, char *buffer) {
  (void)payload;
  (void)buffer;
  return 0;
}

void tree_sitter_aht_external_scanner_deserialize(void *payload, const char *buffer,
                                                  unsigned length) {
  (void)payload;
  (void)buffer;
  (void)length;
}

bool tree_sitter_aht_external_scanner_scan(void *payload, TSLexer *lexer,
                                           const bool *valid_symbols) {
  (void)payload;
  bool want_number = valid_symbols[NUMBER];
  bool want_integer = valid_symbols[INTEGER];
  if (!want_number && !want_integer) return false;
  // In error recovery every symbol is valid; read a number then.
  if (want_number && want_integer) want_integer = false;

  while (lexer->lookahead == ' ' || lexer->lookahead == '\t') lexer->advance(lexer, true);
  if (!is_digit(lexer->lookahead)) return false;

  Digits d;
  memset(&d, 0, sizeof d);
  while (is_digit(lexer->lookahead)) {
    push(&d, lexer->lookahead, false);
    lexer->advance(lexer, false);
  }
  lexer->mark_end(lexer);

  if (want_integer) {
    if (whole_above(&d, VERSION_LIMIT)) return false;
    lexer->result_symbol = INTEGER;
    return true;
  }

  bool whole = true;
  bool ended = false;
  // `1..5` is a range, not `1.` followed by `.5`: the point belongs to the number only when
  // a digit follows it.
  if (lexer->lookahead == '.') {
    lexer->advance(lexer, false);
    if (is_digit(lexer->lookahead)) {
      whole = false;
      while (is_digit(lexer->lookahead)) {
        push(&d, lexer->lookahead, true);
        lexer->advance(lexer, false);
      }
      lexer->mark_end(lexer);
    } else {
      ended = true;
    }
  }

  long exponent = 0;
  // `1e` and `1epochs` end the number before the `e`, as pest does.
  if (!ended && (lexer->lookahead == 'e' || lexer->lookahead == 'E')) {
    lexer->advance(lexer, false);
    bool negative = false;
    if (lexer->lookahead == '+' || lexer->lookahead == '-') {
      negative = lexer->lookahead == '-';
      lexer->advance(lexer, false);
    }
    if (is_digit(lexer->lookahead)) {
      whole = false;
      while (is_digit(lexer->lookahead)) {
        // Saturate: any exponent beyond a million decides the comparison on its own.
        if (exponent < 1000000) exponent = exponent * 10 + (lexer->lookahead - '0');
        lexer->advance(lexer, false);
      }
      if (negative) exponent = -exponent;
      lexer->mark_end(lexer);
    }
  }

  if (d.any_significant) {
    if (whole && whole_above(&d, WHOLE_LIMIT)) return false;
    long position = (d.integer_digits > 0 ? d.integer_digits : -d.leading_fraction_zeros) + exponent;
    if (position > OVERFLOW_EXPONENT) return false;
    if (position == OVERFLOW_EXPONENT && at_least(d.digits, d.kept, OVERFLOW_DIGITS)) return false;
  }
  lexer->result_symbol = NUMBER;
  return true;
}
