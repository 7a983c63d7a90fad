"""`--assistant-model` on sunlit sim, run and ask: what each choice resolves to ($SUNLIT_HF_MODEL
included), clear refusals, and the answer line saying which source answered and why."""

import json

import pytest

from flight.assistant.backends import HF_MODEL_ENV
from sim.sil import AssistantModelChoiceError
from tools.cli import build_parser, main
from tools.run_sim import resolve_assistant_model

AT = "2025-11-02T06:35:00Z"  # five minutes after starcloud1's epoch: the GPU is up and training


@pytest.fixture
def tiny_weights(tiny_assistant_weights):
    """A weights file in the shipped format: a tiny, untrained GPT over the assistant's vocabulary."""
    return tiny_assistant_weights


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def hf_dir(tmp_path):
    (tmp_path / "config.json").write_text("{}")  # enough to be taken for a model directory
    return tmp_path


def test_auto_resolves_to_the_model_only_where_its_words_are_wanted(hf_dir):
    assert resolve_assistant_model("auto", "modeled", environ={}) == "auto"  # SilRun: templates
    assert resolve_assistant_model("auto", "real", environ={}) == "onboard"
    assert resolve_assistant_model("auto", "modeled", prefer_model=True, environ={}) == "onboard"
    env = {HF_MODEL_ENV: str(hf_dir)}
    assert resolve_assistant_model("auto", "real", environ=env) == str(hf_dir)
    assert resolve_assistant_model("auto", "modeled", environ=env) == "auto"
    assert resolve_assistant_model("onboard", "real", environ=env) == "onboard"  # explicit wins
    assert resolve_assistant_model("none", "real", environ=env) == "none"
    with pytest.raises(AssistantModelChoiceError, match="not a model directory"):
        resolve_assistant_model("auto", "real", environ={HF_MODEL_ENV: str(hf_dir / "typo")})


def test_the_flags_parse(tiny_weights):
    parser = build_parser()
    assert parser.parse_args(["sim"]).assistant_model == "auto"
    assert parser.parse_args(["run", "--assistant-model", "onboard"]).assistant_model == "onboard"
    assert parser.parse_args(["ask", "Where are you?"]).assistant_model == "auto"
    assert parser.parse_args(["ask", "Where are you?", "--template"]).assistant_model == "none"
    assert parser.parse_args(["ask", "Q", "--assistant-model", str(tiny_weights)]).assistant_model == str(tiny_weights)
    with pytest.raises(SystemExit):
        parser.parse_args(["ask", "Q", "--template", "--assistant-model", "onboard"])
    for command in ("sim", "run"):
        assert parser.parse_args([command]).train is None  # the scenario's task
        args = parser.parse_args([command, "--train", "assistant", "--dialogues", "d.txt"])
        assert (args.train, str(args.dialogues)) == ("assistant", "d.txt")
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--train", "vision"])


def test_the_stack_says_which_model_speaks(tmp_path):
    from flight.assistant.model import CheckpointAssistantModel
    from flight.checkpoint import CheckpointStore
    from sim.sil import AssistantModelLoader
    from tools.stack import _model_source_text

    source = CheckpointAssistantModel(CheckpointStore(tmp_path), fallback=AssistantModelLoader("onboard"))
    text = _model_source_text(source)
    assert f"fine-tuned on board in {tmp_path}" in text and "until there is one the shipped onboard model" in text


def test_sim_refuses_an_unknown_model_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sim", "--compute", "modeled", "--duration-s", "10", "--quiet", "--no-report",
                 "--out", str(out), "--assistant-model", "gemma-7b"]) == 2
    assert "assistant model 'gemma-7b'" in capsys.readouterr().err and not out.exists()


def test_ask_with_templates_says_so(capsys):
    assert main(["ask", "How much battery do you have?", "--at", AT, "--template"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("My battery is at ") and "%" in out
    assert "template answer; no language model)" in err


def test_ask_with_a_model_says_which_model_and_why_its_words_did_not_go_out(tiny_weights, capsys):
    assert main(["ask", "When is the next eclipse?", "--at", AT, "--assistant-model", str(tiny_weights)]) == 0
    out, err = capsys.readouterr()
    # An untrained model cannot state the eclipse: the checker sends the template (as `sunlit ask
    # --template` would print it), and the line under it names the model.
    assert out.strip() == "The next eclipse starts in 10 minutes, at 06:45 UTC, and lasts 27 minutes."
    assert "template answer; the model's answer disagreed with telemetry (model onboard-gpt)" in err


def test_ask_refuses_a_misconfigured_hf_model_variable(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(HF_MODEL_ENV, str(tmp_path / "nowhere"))
    assert main(["ask", "Where are you?"]) == 2
    assert "not a model directory" in capsys.readouterr().err


def test_run_wires_the_chosen_model_and_says_so(tmp_path, tiny_weights):
    from tools.stack import Stack, StackOptions, banner

    stack = Stack(StackOptions(out_dir=tmp_path, port=0, insecure=True, assistant_model=str(tiny_weights)))
    try:
        assert stack.sil.assistant_source.path == tiny_weights
        assert f"weights {tiny_weights}" in banner(stack)
    finally:
        stack.close()
    with pytest.raises(AssistantModelChoiceError):
        Stack(StackOptions(out_dir=tmp_path / "other", port=0, insecure=True, assistant_model="gemma-7b"))


def test_sim_fine_tunes_the_assistant_on_board_and_ask_speaks_with_its_checkpoint(tmp_path, capsys, tiny_weights,
                                                                                   tiny_dialogues):
    out = tmp_path / "run"
    assert main(["sim", "--compute", "real", "--duration-s", "900", "--quiet", "--no-report", "--out", str(out),
                 "--train", "assistant", "--dialogues", str(tiny_dialogues),
                 "--assistant-model", str(tiny_weights)]) == 0
    printed = capsys.readouterr().out
    assert "training    assistant fine-tuning, " in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["training_task"] == "assistant" and summary["checkpoints"] >= 1
    newest = sorted((out / "checkpoints").glob("ckpt-*.ckpt"))[-1]
    step = int(newest.stem.split("-")[1])

    assert main(["ask", "How much battery do you have?", "--at", AT,
                 "--assistant-model", str(out / "checkpoints")]) == 0
    assert f"assistant-gpt fine-tuned on board, step {step}" in capsys.readouterr().err  # the source line


def test_sim_refuses_dialogues_without_the_assistant_task(tmp_path, capsys, tiny_dialogues):
    out = tmp_path / "run"
    assert main(["sim", "--compute", "modeled", "--duration-s", "10", "--quiet", "--no-report", "--out", str(out),
                 "--dialogues", str(tiny_dialogues)]) == 2
    assert "applies only to the assistant training task" in capsys.readouterr().err
    assert main(["sim", "--compute", "modeled", "--duration-s", "10", "--quiet", "--no-report", "--out", str(out),
                 "--train", "assistant", "--dialogues", str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt: no such file" in capsys.readouterr().err


def test_sim_refuses_a_corrupt_dialogue_corpus_naming_it(tmp_path, capsys, tiny_weights):
    corpus = tmp_path / "bad.txt"
    corpus.write_text("Q: where?\nno answer mark\n\n")
    assert main(["sim", "--compute", "real", "--duration-s", "10", "--quiet", "--no-report",
                 "--out", str(tmp_path / "run"), "--train", "assistant", "--dialogues", str(corpus),
                 "--assistant-model", str(tiny_weights)]) == 2
    assert "bad.txt: example 1: not a dialogue example" in capsys.readouterr().err
