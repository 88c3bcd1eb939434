#!/usr/bin/env bash
# Mutation testing with mutmut: how many realistic one-line bugs do the tests catch?
# Not in CI (it is slow: every mutant reruns the tests that cover its function).
#
#   tools/mutation.sh                 every group below
#   tools/mutation.sh context settings
#   KOGPT_MUTATION_JOBS=2 tools/mutation.sh kernels
#
# Each group mutates its modules and runs only their own test files. The run happens in a copy
# of the working tree under $KOGPT_MUTATION_DIR (default /tmp/kogpt-mutation), with mutmut's
# configuration written there, so the checkout is never touched. Per group it prints the score
# (killed / all mutants that ran) and lists the survivors; `cd DIR/GROUP && mutmut show NAME`
# shows one. mutmut is installed into the active Python environment if missing.
set -euo pipefail

root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=${KOGPT_MUTATION_DIR:-/tmp/kogpt-mutation}
jobs=${KOGPT_MUTATION_JOBS:-$(nproc)}
python=${PYTHON:-python}

declare -A MUTATE TESTS
MUTATE[context]="kogpt/context.py"
TESTS[context]="tests/test_cli_limits.py tests/test_hostile_settings.py"
MUTATE[settings]="kogpt/settings.py"
TESTS[settings]="tests/test_settings.py tests/test_settings_edges.py tests/test_hostile_settings.py tests/test_properties.py"
MUTATE[engine]="kogpt/engine/*"
TESTS[engine]="tests/test_engine.py tests/test_generate.py tests/test_textstream.py tests/test_fastpath.py tests/test_properties.py tests/test_fork.py"
MUTATE[request]="kogpt/server/request.py"
TESTS[request]="tests/test_serve.py tests/test_serve_cli.py"
MUTATE[completions]="kogpt/server/completions.py"
TESTS[completions]="tests/test_serve.py"
MUTATE[kernels]="kogpt/loading/kernels.py"
TESTS[kernels]="tests/test_kernels.py tests/test_kernel_choices.py tests/test_quantize.py"
ALL="context settings engine request completions kernels"
# Tests that start `python -m kogpt` elsewhere: the mutated copy only imports inside mutmut's folder.
DESELECT="tests/test_hostile_settings.py::test_python_m_kogpt_from_the_parent_of_a_checkout
tests/test_engine.py::test_a_script_ending_with_a_stream_still_open_exits_cleanly
tests/test_serve_cli.py::test_the_real_command_serves_and_stops_cleanly"

"$python" -c "import mutmut" 2>/dev/null || "$python" -m pip install -q "mutmut>=3.8,<4"

for group in ${@:-$ALL}; do
    if [[ -z "${MUTATE[$group]:-}" ]]; then
        echo "unknown group $group; choose from: $ALL" >&2
        exit 2
    fi
    dir="$work/$group"
    rm -rf "$dir" && mkdir -p "$dir"
    # The working tree as git sees it (tracked and untracked, not ignored), not build outputs.
    (cd "$root" && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$dir" 2>/dev/null || true)
    {
        echo "[mutmut]"
        echo "source_paths = kogpt"
        echo "only_mutate ="
        for path in ${MUTATE[$group]}; do echo "    $path"; done
        echo "pytest_add_cli_args_test_selection ="
        for path in ${TESTS[$group]}; do echo "    $path"; done
        # torch's thread pool is not fork-safe: each mutant forks from a server that never ran a test.
        echo "process_isolation = forkserver"
        # Generous timeouts: on a shared machine a slow run is not a caught mutant.
        echo "timeout_multiplier = 30"
        echo "timeout_constant = 20"
        echo "pytest_add_cli_args ="
        echo "    -q"
        echo "    -p"
        echo "    no:cacheprovider"
        for test in $DESELECT; do printf '    --deselect\n    %s\n' "$test"; done
    } > "$dir/setup.cfg"
    echo "== $group: mutating ${MUTATE[$group]} against ${TESTS[$group]} ($jobs at once)"
    (cd "$dir" && "$python" -m mutmut run --max-children "$jobs" > mutmut-run.log 2>&1) || {
        echo "mutmut failed; see $dir/mutmut-run.log" >&2
        tail -20 "$dir/mutmut-run.log" >&2
        continue
    }
    (cd "$dir" && "$python" -m mutmut results --all true > results.txt)
    "$python" - "$dir/results.txt" "$group" <<'PY'
import collections, sys

counts, survivors = collections.Counter(), []
for line in open(sys.argv[1]):
    name, _, status = line.strip().rpartition(": ")
    if name:
        counts[status] += 1
        if status in ("survived", "no tests", "timeout"):
            survivors.append(f"{name} ({status})")
ran = counts["killed"] + counts["survived"] + counts["no tests"] + counts["timeout"]
killed = counts["killed"] + counts["timeout"]  # a mutant that hangs the tests is caught, too (listed below)
score = 100 * killed / ran if ran else 0.0
print(f"{sys.argv[2]}: {score:.1f}% killed ({killed} of {ran}); " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
for name in survivors:
    print("  survived:", name)
PY
done
