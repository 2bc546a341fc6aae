#!/bin/bash
# SPDX-License-Identifier: LGPL-2.1-or-later
# plot.sh: decisions/s against policy size, one line per benchmark cell, from
# the CSV that 'make bench' writes (tests/bench/bench.py).
#
#   tests/bench/plot.sh [CSV [OUT]]
#
# CSV defaults to ./bench-results.csv (run it in the build folder), OUT to
# docs/performance.svg of the source tree; an OUT ending in .png makes a PNG.
# Needs gnuplot (Debian: apt-get install gnuplot-nox).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CSV=${1:-bench-results.csv}
OUT=${2:-$HERE/../../docs/performance.svg}

case "${1:-}" in
-h | --help)
        sed -n '3,10s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
esac
if ! command -v gnuplot >/dev/null; then
        echo "plot.sh: gnuplot is not installed; on Debian: apt-get install gnuplot-nox" >&2
        exit 1
fi
if [ ! -r "$CSV" ]; then
        echo "plot.sh: cannot read $CSV; run 'make bench' in the build folder first" >&2
        exit 1
fi

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# One data file per series and cell: "rules decisions/s" lines. refsrv is
# drawn at x = 1 (its one hard-coded rule). The 10-rule policy starts both the
# exact and the pattern lines.
awk -F, -v dir="$TMP" '
NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
$col["section"] != "cell" { next }
{
        key = $col["name"]; cell = $col["cell"]; rps = $col["rps"]; rules = $col["rules"]
        if (!(cell in idx)) { idx[cell] = ++ncells; print cell > (dir "/cells") }
        i = idx[cell]
        if (key == "ref") { print 1, rps > (dir "/ref-" i); next }
        if (key == "p10" || key == "p10k" || key == "p100k") print rules, rps > (dir "/exact-" i)
        if (key == "p10" || key == "p10k-w" || key == "p100k-w") print rules, rps > (dir "/wild-" i)
        if (key == "p10:nomatch" || key == "p10k-w:nomatch" || key == "p100k-w:nomatch") print rules, rps > (dir "/nomatch-" i)
}' "$CSV"
[ -s "$TMP/cells" ] || { echo "plot.sh: no cell rows in $CSV" >&2; exit 1; }
mapfile -t CELLS <"$TMP/cells"

plot_cmd() { # series [dashtype]: the plot command of one panel
        local series=$1 dt=${2:-1} sep="" cmd="plot" i
        for i in "${!CELLS[@]}"; do
                local n=$((i + 1))
                if [ -s "$TMP/$series-$n" ]; then
                        cmd+="$sep '$TMP/$series-$n' using 1:2 with linespoints lc $n dt $dt pt 7 ps 0.6 title '${CELLS[$i]}'"
                        sep=","
                fi
                if [ "${3:-}" = nomatch ] && [ -s "$TMP/nomatch-$n" ]; then
                        cmd+="$sep '$TMP/nomatch-$n' using 1:2 with linespoints lc $n dt 2 pt 6 ps 0.6 notitle"
                        sep=","
                fi
                if [ -s "$TMP/ref-$n" ]; then
                        cmd+="$sep '$TMP/ref-$n' using 1:2 with points lc $n pt 5 ps 0.8 notitle"
                        sep=","
                fi
        done
        echo "$cmd"
}

case "$OUT" in
*.png) TERM_CMD="set terminal pngcairo size 1100,520 font 'sans,10'" ;;
*) TERM_CMD="set terminal svg size 1100,520 dynamic font 'sans,11' background rgb 'white'" ;;
esac

gnuplot <<EOF
$TERM_CMD
set output '$OUT'
set multiplot layout 1,2 title "credgated decisions/s against policy size (squares at x = refsrv: the bare reference server)"
set logscale xy
set xrange [0.6:250000]
set xtics ("refsrv" 1, "10" 10, "100" 100, "1k" 1000, "10k" 10000, "100k" 100000)
set format y "%.0s%c"
set grid
set xlabel "rules in the policy"
set ylabel "decisions/s (log)"
set yrange [*:*]
set offsets 0, 0, graph 0.25, 0
set key top center horizontal maxcols 3 opaque font ",9"
set title "exact actions (bench.allowed, allowed by the last rule)"
$(plot_cmd exact)
set title "with 1,000 patterns: bench.allowed (solid), action matching nothing (dashed)"
unset key
$(plot_cmd wild 1 nomatch)
unset multiplot
EOF
echo "plot.sh: wrote $OUT"
