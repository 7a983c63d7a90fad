"""`sunlit ask`: at a simulated time of a scenario, and against a running stack (test_stack.py)."""

from tools.cli import main


def test_ask_at_a_simulated_time_prints_a_grounded_answer(capsys):
    assert main(["ask", "When is the next eclipse?", "--at", "2025-11-02T06:35:00Z"]) == 0
    out, err = capsys.readouterr()
    # starcloud1's first umbra begins at 06:44:56 UTC (the summary of `sunlit sim` lists it).
    assert out.strip() == "The next eclipse starts in 10 minutes, at 06:45 UTC, and lasts 27 minutes."
    assert "starcloud1 at 2025-11-02T06:35:00Z, template answer" in err


def test_ask_rejects_a_time_before_the_epoch(capsys):
    assert main(["ask", "Where are you?", "--at", "2025-11-01T00:00:00Z"]) == 2
    assert "before the scenario's epoch" in capsys.readouterr().err
