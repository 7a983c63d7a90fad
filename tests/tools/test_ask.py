"""`sunlit ask`: at a simulated time of a scenario, and against a running stack (test_stack.py)."""

from tools.cli import main


# starcloud1's first umbra begins at 06:44:56 UTC and ends at 07:11:33 (the summary of `sunlit sim`).
ECLIPSE_AT_0635 = "The next eclipse starts in 10 minutes, at 06:45 UTC, and lasts 27 minutes."


def test_ask_at_a_simulated_time_prints_a_grounded_answer(capsys):
    assert main(["ask", "When is the next eclipse?", "--at", "2025-11-02T06:35:00Z", "--template"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == ECLIPSE_AT_0635
    assert "starcloud1 at 2025-11-02T06:35:00Z, template answer" in err


def test_by_default_the_onboard_model_answers_and_its_facts_are_right(capsys):
    from flight.assistant.answers import check_answer

    assert main(["ask", "When is the next eclipse?", "--at", "2025-11-02T06:35:00Z"]) == 0
    out, err = capsys.readouterr()
    assert check_answer(out.strip(), ECLIPSE_AT_0635, ()).ok, out
    # Whatever the model said, the line says who answered; a disagreement would have sent the template.
    assert "model answer by onboard-gpt" in err or "the model's answer disagreed" in err, err


def test_ask_rejects_a_time_before_the_epoch(capsys):
    assert main(["ask", "Where are you?", "--at", "2025-11-01T00:00:00Z"]) == 2
    assert "before the scenario's epoch" in capsys.readouterr().err
