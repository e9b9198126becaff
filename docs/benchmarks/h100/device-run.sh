#!/usr/bin/env bash
# How docs/benchmarks.md was measured: run from the repository root on the GPU machine, with the
# wheels (.whl) and the offline llama.cpp source (.device/llama.cpp-0c1e570.tar.gz) beside it, or
# instead of the source the build an earlier call returned (.devbin/llama-bin.tar.xz.part*).
# Device run (issue 7), resumable: each call runs the steps not yet done for at most ~9 min,
# then packs everything measured so far into $OUT/results.tgz (the device returns few files).
# Call it again (within the warm window) to go on.
set -u
S=/srv/llmtune-issue7; mkdir -p $S/out
timeout -k 5 ${BUDGET_S:-550} bash docs/benchmarks/h100/device-steps.sh; echo "steps rc=$?"
tar czf $OUT/results.tgz -C $S out
# The build, in parts under the device's 16 MiB per returned file, for a later session to carry.
[ -e $S/llama-bin.tar.xz ] && [ ! -e $S/bin-sent ] && split -b 15M -d $S/llama-bin.tar.xz $OUT/llama-bin.tar.xz.part && touch $S/bin-sent
ls $S/done.* 2>/dev/null | xargs -n1 basename 2>/dev/null | tr '\n' ' '; echo
df -h / | tail -1; ls -la /srv/models 2>/dev/null
