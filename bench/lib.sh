# What every benchmark measures with. Sourced.

# median: the median of the numbers on stdin, one per line.
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# cpu_seconds PID...: user + system CPU seconds the processes have used so far (a process
# that is gone counts 0).
cpu_seconds() {
	local p ticks=0
	for p in "$@"; do ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$p/stat" 2>/dev/null || echo 0))); done
	awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", t / hz }'
}

mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# plot_scale DAT PNG TITLE YLABEL LOGY COLUMN:TITLE...: a line per COLUMN of DAT (whitespace-
# separated, column 1 the number of objects) against it, both axes logarithmic unless LOGY is
# 0, written to PNG. A column whose TITLE starts with "goal" is drawn dashed.
plot_scale() {
	local dat=$1 png=$2 title=$3 ylabel=$4 logy=$5 spec plots=() col name style
	shift 5
	command -v gnuplot >/dev/null || { echo "bench: gnuplot is missing (dev/install-deps installs gnuplot-nox)" >&2; return 1; }
	for spec in "$@"; do
		col=${spec%%:*} name=${spec#*:}
		style="linespoints lw 2 pt 7"
		[[ $name == goal* ]] && style="lines lw 1 dt 2 lc rgb 'gray40'"
		plots+=("'$dat' using 1:$col with $style title '$name'")
	done
	gnuplot <<EOF
set terminal pngcairo size 800,480 font ',10' noenhanced
set output '$png'
set title '$title'
set xlabel 'objects'
set ylabel '$ylabel'
set logscale x
$( ((logy)) && echo 'set logscale y' )
set key top left
set grid
plot $(IFS=,; echo "${plots[*]}")
EOF
}
