#!/usr/bin/env bash
# The engine's acceptance lines that go through the command line:
# greedy text of stories260K, tokenizer .inp/.out files, eval/info output.
source "$(dirname "$0")/lib.sh"
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -f "$MODEL" ] || { bad "model present" "$MODEL missing"; finish; exit 1; }

# 1. Real model, greedy: the output begins with llama2.c's reference text.
expected=$(cat "$ELPIS_SHARED/models/stories260K.expected-greedy-200.txt")
"$ELPIS_BIN" run -m "$MODEL" -p "Once upon a time" -n 200 --temp 0 >"$TMP/greedy.txt" 2>"$TMP/greedy.err"
rc=$?
assert_eq "run exits 0" 0 "$rc"
got=$(head -c ${#expected} "$TMP/greedy.txt")
assert_eq "greedy text matches llama2.c run.c" "$expected" "$got"
assert_eq "run writes nothing on stderr" "" "$(cat "$TMP/greedy.err")"

# Same seed, same text; sampling at temperature 1 differs from greedy.
a=$("$ELPIS_BIN" run -m "$MODEL" -p "Once upon a time" -n 40 --temp 1 --seed 7 2>/dev/null)
b=$("$ELPIS_BIN" run -m "$MODEL" -p "Once upon a time" -n 40 --temp 1 --seed 7 2>/dev/null)
c=$("$ELPIS_BIN" run -m "$MODEL" -p "Once upon a time" -n 40 --temp 1 --seed 8 2>/dev/null)
assert_eq "same seed reproduces" "$a" "$b"
if [ "$a" != "$c" ]; then ok "different seeds differ"; else bad "different seeds differ"; fi

# 2. Tokenizers through the CLI: every .inp string gives the .out ids.
for inp in "$ELPIS_SHARED"/testdata/vocab/*.gguf.inp; do
  vocab=${inp%.inp}; name=$(basename "$vocab" .gguf)
  if "$ELPIS_BIN" tokenize -m "$vocab" --inp "$inp" >"$TMP/$name.out" 2>"$TMP/$name.err" &&
     cmp -s "$TMP/$name.out" "$vocab.out"; then ok "tokenize --inp $name"
  else bad "tokenize --inp $name" "$(diff <(cat "$vocab.out") "$TMP/$name.out" | head -5; cat "$TMP/$name.err")"; fi
done
assert_eq "tokenize adds BOS" "1 403 407 261 378" "$("$ELPIS_BIN" tokenize -m "$MODEL" "Once upon a time")"
assert_eq "tokenize --no-bos" "403 407 261 378" "$("$ELPIS_BIN" tokenize -m "$MODEL" --no-bos "Once upon a time")"

# 3. eval prints one JSON line per position with K entries.
out=$("$ELPIS_BIN" eval -m "$MODEL" --tokens 1,403,407 --top 3)
assert_eq "eval prints a line per position" 3 "$(echo "$out" | wc -l)"
assert_contains "eval line format" "$(echo "$out" | head -1)" '{"pos":0,"top":[['
exact=$("$ELPIS_BIN" eval -m "$MODEL" --tokens 1,403,407 --top 1 --exact | tail -1)
assert_contains "eval --exact agrees on the top token" "$exact" "$(echo "$out" | tail -1 | cut -d'[' -f3 | cut -d, -f1)"

# 4. info describes the model; usage errors exit 2 with a message.
info=$("$ELPIS_BIN" info -m "$MODEL")
assert_contains "info names the architecture" "$info" "architecture: llama"
assert_contains "info names the vocab" "$info" "vocab: 512"
"$ELPIS_BIN" run -m "$MODEL" -p x -n abc >/dev/null 2>"$TMP/usage.err"; rc=$?
assert_eq "bad -n exits 2" 2 "$rc"
assert_contains "bad -n is named" "$(cat "$TMP/usage.err")" "-n: 'abc'"
"$ELPIS_BIN" run -m "$TMP/nope.gguf" -p x >/dev/null 2>"$TMP/missing.err"; rc=$?
assert_eq "missing model exits 1" 1 "$rc"
assert_contains "missing model is named" "$(cat "$TMP/missing.err")" "nope.gguf"
"$ELPIS_BIN" frobnicate >/dev/null 2>&1; assert_eq "unknown command exits 2" 2 "$?"
finish
