"""Tool-calling conversations (OpenAI and ShareGPT function-call formats) and chat-template control:
load, curate, train with the chat template (loss on assistant turns, tool calls included)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from curatune.chat_format import (
    IGNORE_INDEX,
    PLAIN_TEMPLATE,
    ChatSettings,
    apply_chat_settings,
    encode,
)
from curatune.config import load_config, validate_config
from curatune.curate.base import CurateContext
from curatune.curate.config import ExactDedupConfig, NearDupConfig, QualityConfig
from curatune.curate.pipeline import CurationPipeline
from curatune.data.loaders import load_path
from curatune.errors import ConfigError, DataError
from curatune.evaluate.generation import format_prompt
from curatune.records import Record, frame_to_records, records_to_frame

#: A Qwen2.5-style template (the structure of Qwen2.5-Instruct's): tools in the system turn, calls in
#: <tool_call> blocks, consecutive tool results in one user turn of <tool_response> blocks.
TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n<tools>{% for tool in tools %}\n{{ tool | tojson }}{% endfor %}\n</tools><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}"
    "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if message.content %}{{ message.content }}\n{% endif %}"
    "{% for call in message.tool_calls %}<tool_call>\n"
    "{\"name\": \"{{ call.function.name }}\", \"arguments\": {{ call.function.arguments | tojson }}}\n"
    "</tool_call>{% endfor %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}"
    "{% if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user{% endif %}"
    "\n<tool_response>\n{{ message.content }}\n</tool_response>"
    "{% if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>\n{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

OPENAI_ROWS = [
    {"messages": [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temperature\": 18, \"sky\": \"cloudy\"}"},
        {"role": "assistant", "content": "It is 18 degrees and cloudy in Paris."}],
     "tools": [WEATHER_TOOL]},
    # A conversation that ends with the call (the answer comes in a later request).
    {"messages": [
        {"role": "user", "content": "Rome?"},
        {"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]}],
     "tools": [WEATHER_TOOL]},
    # Arguments that are not JSON: rejected with a reason, never dropped silently.
    {"messages": [
        {"role": "user", "content": "Oslo?"},
        {"role": "assistant", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": "{city: Oslo"}}]}]},
]

SHAREGPT_ROWS = [
    {"conversations": [
        {"from": "human", "value": "Convert 100 USD to EUR."},
        {"from": "function_call", "value": json.dumps(
            {"name": "convert_currency", "arguments": {"amount": 100, "from": "USD", "to": "EUR"}})},
        {"from": "observation", "value": "{\"converted_amount\": 92.5}"},
        {"from": "gpt", "value": "100 USD is about 92.50 EUR."}],
     "system": "You are a helpful assistant.",
     "tools": json.dumps([{"name": "convert_currency", "description": "Convert an amount between currencies",
                           "parameters": {"type": "object", "properties": {
                               "amount": {"type": "number"}, "from": {"type": "string"},
                               "to": {"type": "string"}}}}])},
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def openai_file(tmp_path) -> Path:
    return _write_jsonl(tmp_path / "openai_tools.jsonl", OPENAI_ROWS)


@pytest.fixture
def sharegpt_file(tmp_path) -> Path:
    return _write_jsonl(tmp_path / "sharegpt_tools.jsonl", SHAREGPT_ROWS)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _trained(tokenizer, enc) -> str:
    return tokenizer.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX])


def _masked(tokenizer, enc) -> str:
    return tokenizer.decode([t for t, lab in zip(enc.input_ids, enc.labels) if lab == IGNORE_INDEX])


# ----------------------------------------------------------------------------- loading


def test_openai_tool_calls_and_tool_results_load(openai_file):
    loaded = load_path(openai_file)
    assert len(loaded.records) == 2
    first = loaded.records[0]
    assert [m["role"] for m in first.messages] == ["user", "assistant", "tool", "assistant"]
    call = first.messages[1]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}  # arguments parsed
    assert call["id"] == "call_1" and first.messages[1]["content"] == ""
    assert first.messages[2]["tool_call_id"] == "call_1"
    assert first.tools == [WEATHER_TOOL] and first.uses_tools
    assert first.response == "It is 18 degrees and cloudy in Paris."
    assert loaded.records[1].response == 'get_weather({"city": "Rome"})'  # a call-only turn is not empty
    # The bad row is in the ledger with its reason and row, not silently gone.
    (reason, detail), = loaded.rejected[["reason", "detail"]].values.tolist()
    assert reason == "bad_tool_call" and f"{openai_file}:3" in detail and "not valid JSON" in detail


def test_sharegpt_function_call_and_observation_turns_load(sharegpt_file):
    loaded = load_path(sharegpt_file)
    assert len(loaded.rejected) == 0
    (record,) = loaded.records
    assert [m["role"] for m in record.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert record.messages[2]["tool_calls"][0]["function"] == {
        "name": "convert_currency", "arguments": {"amount": 100, "from": "USD", "to": "EUR"}}
    assert record.messages[3]["content"] == '{"converted_amount": 92.5}'
    # LLaMA-Factory stores tools as JSON text without the {"type": "function"} wrapper.
    assert record.tools[0]["type"] == "function" and record.tools[0]["function"]["name"] == "convert_currency"


def test_tool_records_survive_parquet_and_ids_depend_on_the_call(openai_file, sharegpt_file):
    records = load_path(openai_file).records + load_path(sharegpt_file).records
    back = frame_to_records(records_to_frame(records))
    assert [(r.id, r.messages, r.tools) for r in back] == [(r.id, r.messages, r.tools) for r in records]
    other = json.loads(json.dumps(records[1].messages))
    other[1]["tool_calls"][0]["function"]["arguments"] = {"city": "Milan"}
    changed = Record.make(other, meta={"tools": [WEATHER_TOOL]})
    assert changed.id != records[1].id


def test_plain_records_keep_their_ids():
    # Ids of existing runs and hand labels must not move: the hash of a plain chat is unchanged.
    record = Record.make([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    assert record.id == "018f36a90de6e76e"  # the id before tool support


# ----------------------------------------------------------------------------- curation


def test_curation_keeps_tool_conversations(openai_file, sharegpt_file):
    records = load_path(openai_file).records + load_path(sharegpt_file).records
    steps = [QualityConfig(), ExactDedupConfig(), NearDupConfig()]
    result = CurationPipeline(steps, CurateContext(workers=1)).run(records)
    assert result.report["kept"] == 3 and len(result.removed) == 0
    by_id = {r.id: r for r in result.kept}
    # The conversation ending with a bare tool call was neither repaired as empty nor cut as truncated.
    assert by_id[records[1].id].messages == records[1].messages


def test_empty_tool_result_is_not_an_empty_turn():
    record = Record.make([
        {"role": "user", "content": "Delete the temp files."},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "delete_temp", "arguments": {}}}]},
        {"role": "tool", "content": ""},
        {"role": "assistant", "content": "Done: the temp files are deleted."},
    ])
    result = CurationPipeline([QualityConfig()], CurateContext(workers=1)).run([record])
    assert result.report["kept"] == 1 and result.report["trimmed_records"] == 0


# ----------------------------------------------------------------------------- training format


def test_tool_call_turns_are_trained_and_tool_results_are_not(tokenizer, openai_file):
    record = load_path(openai_file).records[0]
    tokenizer = _with_template(tokenizer, TOOL_TEMPLATE)
    enc = encode(tokenizer, record, max_length=2048)
    trained, masked = _trained(tokenizer, enc), _masked(tokenizer, enc)
    assert trained == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "It is 18 degrees and cloudy in Paris.<|im_end|>\n"
    )
    assert "<tool_response>" in masked and "cloudy\"}" in masked  # the result is context, not target
    assert '"name": "get_weather"' in masked and "# Tools" in masked  # the schema is rendered, untrained
    whole = tokenizer.apply_chat_template(record.messages, tools=record.tools, tokenize=False)
    assert tokenizer.decode(enc.input_ids) == whole


def test_plain_template_renders_tools_for_models_without_a_template(tokenizer, sharegpt_file):
    record = load_path(sharegpt_file).records[0]
    tok = _with_template(tokenizer, PLAIN_TEMPLATE)
    enc = encode(tok, record, max_length=2048)
    assert _trained(tok, enc) == (
        '<tool_call>{"name": "convert_currency", "arguments": {"amount": 100, "from": "USD", "to": "EUR"}}'
        "</tool_call><|im_end|>\n\n100 USD is about 92.50 EUR.<|im_end|>\n\n"
    )
    assert "### Tool result:\n{\"converted_amount\": 92.5}" in _masked(tok, enc)


def test_template_without_tool_support_is_one_clear_error(tokenizer, openai_file):
    # The tiny model's ChatML template prints only content: the call would become an empty turn.
    record = load_path(openai_file).records[0]
    with pytest.raises(DataError, match=rf"{openai_file}:1: the model's chat template does not render tool calls"
                       r".*get_weather.*train\.chat_template"):
        encode(tokenizer, record, max_length=2048)


def test_template_that_raises_names_the_row(tokenizer, sharegpt_file):
    record = load_path(sharegpt_file).records[0]
    strict = "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tool role') }}{% endif %}" \
             "{{ m.content }}{% endfor %}"
    with pytest.raises(DataError, match=rf"{sharegpt_file}:1: the chat template cannot render.*no tool role"):
        encode(_with_template(tokenizer, strict), record, max_length=2048)


def test_train_on_inputs_trains_every_token(tokenizer, openai_file):
    record = load_path(openai_file).records[0]
    tok = _with_template(tokenizer, TOOL_TEMPLATE)
    default = encode(tok, record, 2048)
    everything = encode(tok, record, 2048, ChatSettings(train_on_inputs=True))
    assert everything.input_ids == default.input_ids
    assert everything.labels == everything.input_ids
    assert default.trained_tokens < everything.trained_tokens


def test_system_prompt_is_added_only_when_a_record_has_none(tokenizer):
    plain = Record.make([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    own = Record.make([{"role": "system", "content": "Be terse."}, *plain.messages])
    chat = ChatSettings(system_prompt="You are a careful assistant.")
    assert "You are a careful assistant." in _masked(tokenizer, encode(tokenizer, plain, 512, chat))
    masked_own = _masked(tokenizer, encode(tokenizer, own, 512, chat))
    assert "Be terse." in masked_own and "careful" not in masked_own
    prompt = format_prompt(tokenizer, plain.messages, chat)
    assert prompt == ("<|im_start|>system\nYou are a careful assistant.<|im_end|>\n"
                      "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_configured_template_is_used_in_training_and_evaluation_alike(tokenizer, tiny_model_dir):
    from transformers import AutoTokenizer

    template = ("{% for m in messages %}<<{{ m.role }}>> {{ m.content }}{% if m.role == 'assistant' %}"
                "{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}<<assistant>> {% endif %}")
    chat = ChatSettings(template=template)
    record = Record.make([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}])
    base = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = format_prompt(base, record.messages, chat)  # the base model at evaluation time
    assert prompt == "<<user>> Hi\n<<assistant>> "
    assert base.chat_template != template  # the shared base tokenizer is not modified
    trained_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    apply_chat_settings(trained_tok, chat)  # what a cell saves with its weights
    enc = encode(trained_tok, record, 512, chat)
    assert tokenizer.decode(enc.input_ids) == "<<user>> Hi\n<<assistant>> Hello<|im_end|>\n"
    assert format_prompt(trained_tok, record.messages, chat) == prompt


def test_chat_keys_in_config(tmp_path):
    template_file = tmp_path / "template.jinja"
    template_file.write_text("{{ messages[0].content }}", encoding="utf-8")
    config_file = tmp_path / "config.yaml"
    config_file.write_text("train:\n  chat_template: template.jinja\n  train_on_inputs: true\n"
                           "  system_prompt: Answer in French.\n", encoding="utf-8")
    config = load_config(config_file)  # the path resolves against the config's folder
    chat = ChatSettings.from_train(config.train)
    assert chat == ChatSettings("{{ messages[0].content }}", "Answer in French.", True)
    assert ChatSettings.from_train(validate_config({}).train) == ChatSettings()
    with pytest.raises(ConfigError, match="train.chat_template"):
        validate_config({"train": {"chat_template": "missing.jinja"}})


def _with_template(tokenizer, template: str):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


# ----------------------------------------------------------------------------- the sweep


def _tool_records(n: int) -> list[Record]:
    """``n`` distinct tool-calling conversations (call, result, answer) plus their schema."""
    records = []
    for i in range(n):
        city = f"City{i}"
        records.append(Record.make([
            {"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}]},
            {"role": "tool", "content": json.dumps({"temperature": i % 30})},
            {"role": "assistant", "content": f"It is {i % 30} degrees in {city}."},
        ], source=f"tools.jsonl:{i + 1}", meta={"tools": [WEATHER_TOOL]}))
    return records


@pytest.mark.slow
def test_sweep_trains_tool_conversations_with_the_configured_template(tmp_path, tiny_model_dir):
    from train_helpers import curated_run_dir, tiny_config
    from transformers import AutoTokenizer

    from curatune.rundir import list_cells
    from curatune.train.sweep import run_sweep

    run_dir = curated_run_dir(tmp_path / "run", _tool_records(12))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[4], methods=["lora"], max_seq_length=256,
                         heldout_size=2, chat_template=TOOL_TEMPLATE)
    summary = run_sweep(config, run_dir, progress=False)
    assert summary["cells_done"] == 1 and not summary["failed"]
    (cell,) = list_cells(run_dir)
    saved = AutoTokenizer.from_pretrained(cell.path / "final")
    assert saved.chat_template == TOOL_TEMPLATE  # evaluation prompts the cell as it was trained


def test_sweep_with_a_template_that_drops_tool_calls_stops_before_training(tmp_path, tiny_model_dir):
    from train_helpers import curated_run_dir, tiny_config

    from curatune.rundir import list_cells
    from curatune.train.sweep import run_sweep

    run_dir = curated_run_dir(tmp_path / "run", _tool_records(12))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[4], methods=["lora"], max_seq_length=256, heldout_size=2)
    with pytest.raises(DataError, match=r"tools\.jsonl:\d+: the model's chat template does not render tool calls"):
        run_sweep(config, run_dir, progress=False)
    assert all(c.status == "pending" for c in list_cells(run_dir))  # not one failed cell per grid point
