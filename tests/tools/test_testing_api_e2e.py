"""End to end: the pytest fixtures start `sunlit run` (starcloud1, modeled compute, 10x real time)
and these tests drive it through the ground link, with the test API and with the console.

Run against a stack of your own with ``--sunlit-endpoint tcp://... --sunlit-keys DIR``.
"""

import io

from tools.console import run_console

# The fixtures come from the plugin (entry point pytest11 "sunlit"); importing them here keeps this
# file working where the package was installed before the entry point existed.
from tools.testing import (  # noqa: F401
    equal_to,
    greater_than,
    sunlit_api,
    sunlit_dictionary,
    sunlit_session_api,
    sunlit_stack,
)


def test_set_mode_idle_changes_telemetry_and_emits_one_event(sunlit_api):
    sunlit_api.send_and_assert_command("modes.SET_MODE", {"mode": "IDLE"})
    assert sunlit_api.await_telemetry("modes.mode", equal_to("IDLE")) == "IDLE"
    changed = sunlit_api.assert_event_count("MODE_CHANGED", 1)
    assert changed[0].fields["mode"] == "IDLE"
    sunlit_api.assert_event_count("dispatcher.COMMAND_COMPLETED", greater_than(0))


def test_out_of_range_argument_is_rejected_by_the_stack_naming_it(sunlit_api):
    result = sunlit_api.send_and_assert_command("gpu.SET_POWER_CAP", {"cap_w": 900.0}, status="VALIDATION_ERROR")
    assert "'cap_w'" in result.reason and "[200, 700] W" in result.reason  # the range in gpu.toml
    sunlit_api.await_event("dispatcher.COMMAND_REJECTED",
                           predicate=lambda e: e.fields.get("command") == "gpu.SET_POWER_CAP")


def test_hazardous_command_needs_arming(sunlit_api):
    off = {"switch": "gpu", "on": False}
    sunlit_api.send_and_assert_command("eps.SET_SWITCH", off, status="EXECUTION_ERROR")
    sunlit_api.arm("eps.SET_SWITCH")
    sunlit_api.send_and_assert_command("eps.SET_SWITCH", off)
    sunlit_api.await_event("dispatcher.COMMAND_ARMED")


def console(stack, *args):
    keys = ["--keys", stack["keys_dir"]] if stack.get("keys_dir") else ["--insecure"]
    out, err = io.StringIO(), io.StringIO()
    code = run_console([stack["command_endpoint"], *keys, "--color", "never", *args],
                       stdin=io.StringIO(""), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_console_script_exit_codes_against_the_stack(sunlit_stack, tmp_path):
    script = tmp_path / "pass.txt"
    script.write_text("# a short pass\nmodes.NOOP\nwatch eps.battery_soc --count 2\n")
    code, out, err = console(sunlit_stack, str(script))
    assert code == 0, err
    assert "OK modes.NOOP" in out and out.count("eps.battery_soc=") == 2

    code, out, err = console(sunlit_stack, "-c", "modes.NOOP; gpu.SET_POWER_CAP cap_w=900")
    assert code == 1
    assert "OK modes.NOOP" in out and "'cap_w'" in err
