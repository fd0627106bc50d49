#!/usr/bin/env bash
# test_gguf_errors.sh -- `elpis info` on malformed model files.
#
# Contract for every case: exit status 1, nothing on stdout, and exactly one
# line on stderr that names the file and the problem. The malformed files are
# made in a temporary directory from the shared stories260K.gguf: cut short
# with head -c, patched in place with dd, or with one name rewritten to another
# of the same length (perl), so every other byte stays valid.
source "$(dirname "$0")/lib.sh"
set -euo pipefail
SUITE=gguf_errors
export LC_ALL=C          # strerror() text is compared below
MODEL="$ELPIS_SHARED/models/stories260K.gguf"
[ -x "$ELPIS_BIN" ] || { echo "gguf_errors: ELPIS_BIN=$ELPIS_BIN is not executable" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "gguf_errors: $MODEL is missing" >&2; exit 1; }
SIZE=$(stat -c %s "$MODEL")

# expect_info_error NAME FILE PHRASE
expect_info_error() {
  local name=$1 file=$2 phrase=$3 rc=0 err lines
  "$ELPIS_BIN" info -m "$file" >"$TMP/stdout" 2>"$TMP/stderr" || rc=$?
  err=$(cat "$TMP/stderr")
  lines=$(wc -l <"$TMP/stderr")
  if [ "$rc" -ne 1 ]; then bad "$name" "exit status $rc, want 1; stderr: $err"
  elif [ -s "$TMP/stdout" ]; then bad "$name" "stdout is not empty: $(head -c 300 "$TMP/stdout")"
  elif [ "$lines" -ne 1 ]; then bad "$name" "$lines lines on stderr, want 1: $err"
  elif [[ "$err" != *"$file"* ]]; then bad "$name" "stderr does not name $file: $err"
  elif [[ "$err" != *"$phrase"* ]]; then bad "$name" "stderr does not say '$phrase': $err"
  else ok "$name"
  fi
}

# The makers below write $TMP/NAME.gguf. They run as plain statements (not
# inside $(...)) so that a failure stops the script under set -e.

# cut_model NAME N: the model's first N bytes.
cut_model() { head -c "$2" "$MODEL" >"$TMP/$1.gguf"; }

# patch_model NAME OFFSET PRINTF-BYTES: a copy with bytes overwritten at OFFSET.
patch_model() {
  cp "$MODEL" "$TMP/$1.gguf"
  printf "$3" | dd of="$TMP/$1.gguf" bs=1 seek="$2" conv=notrunc status=none
}

# rename_model NAME PERL-SUBSTITUTION: a copy with a same-length byte rewrite.
rename_model() {
  perl -0777 -pe "$2" "$MODEL" >"$TMP/$1.gguf"
  if [ "$(stat -c %s "$TMP/$1.gguf")" -ne "$SIZE" ]; then echo "gguf_errors: rewrite '$2' changed the size" >&2; exit 1; fi
  if cmp -s "$MODEL" "$TMP/$1.gguf"; then echo "gguf_errors: rewrite '$2' matched nothing" >&2; exit 1; fi
}

# ---- the file itself --------------------------------------------------------
: >"$TMP/empty.gguf"
expect_info_error "empty file" "$TMP/empty.gguf" "too small for a GGUF header"
cut_model short 10
expect_info_error "10-byte file" "$TMP/short.gguf" "too small for a GGUF header"
{ printf 'GGUX'; head -c 60 /dev/zero; } >"$TMP/magic.gguf"
expect_info_error "bad magic" "$TMP/magic.gguf" "bad magic"
cp "$ELPIS_BIN" "$TMP/binary.gguf"
expect_info_error "not a GGUF at all" "$TMP/binary.gguf" "bad magic"
patch_model v1 4 '\001'
expect_info_error "version 1" "$TMP/v1.gguf" "GGUF v1 is not supported"
patch_model v4 4 '\004'
expect_info_error "version 4" "$TMP/v4.gguf" "unsupported GGUF version"
expect_info_error "missing file" "$TMP/no-such.gguf" "No such file or directory"
mkdir "$TMP/dir.gguf"
expect_info_error "a directory" "$TMP/dir.gguf" "not a regular file"

# ---- truncation: the header, the metadata, the tensor infos, the data --------
cut_model cut_header 24
expect_info_error "cut after the header" "$TMP/cut_header.gguf" "at offset"
cut_model cut_meta 5000
expect_info_error "cut in the metadata" "$TMP/cut_meta.gguf" "at offset"
cut_model cut_data $((SIZE / 2))
expect_info_error "cut in the tensor data" "$TMP/cut_data.gguf" "is outside the file"
cut_model cut_last $((SIZE - 1))
expect_info_error "last byte missing" "$TMP/cut_last.gguf" "is outside the file"

# ---- well-formed GGUF, wrong model ------------------------------------------------
rename_model arch 's/llama/llamb/g'
expect_info_error "unsupported architecture" "$TMP/arch.gguf" "architecture 'llamb' is not supported"
rename_model key 's/llama\.embedding_length/llama.embedding_lengtX/'
expect_info_error "missing key" "$TMP/key.gguf" "missing required key llama.embedding_length"
rename_model tensor 's/blk\.0\.ffn_up\.weight/blk.0.ffn_uX.weight/'
expect_info_error "missing tensor" "$TMP/tensor.gguf" "missing tensor 'blk.0.ffn_up.weight'"
# output_norm.weight: n_dims 1, ne0 64 -> 32 (a smaller shape keeps the data in range)
rename_model shape 's/(output_norm\.weight\x01\x00\x00\x00)\x40\x00{7}/$1\x20\x00\x00\x00\x00\x00\x00\x00/'
expect_info_error "wrong shape" "$TMP/shape.gguf" "tensor 'output_norm.weight' has shape [32, 1, 1, 1], expected [64, 1]"

# The unmodified model still works, so the failures above are the edits'.
rc=0; "$ELPIS_BIN" info -m "$MODEL" >"$TMP/stdout" 2>"$TMP/stderr" || rc=$?
assert_eq "intact model: exit 0" 0 "$rc"
assert_contains "intact model: describes it" "$(cat "$TMP/stdout")" "architecture: llama"

finish
