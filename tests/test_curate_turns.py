"""Turn-level curation on chat data: trims vs drops, the ledger, accounting, and the rules
that misfired on real conversations (repetition, language, URLs, endings, empty turns, dedup).

The conversations are hand-written, modelled on what ShareGPT-style data holds.
"""
from __future__ import annotations

import json

import pandas as pd
import pytest

from curatune.curate.base import CurateContext, Removal, Step, StepResult
from curatune.curate.config import (
    CurateConfig, ExactDedupConfig, LanguageConfig, NearDupConfig, QualityConfig, default_steps,
)
from curatune.curate.dedup import ExactDedup, NearDupDedup
from curatune.curate.language import LanguageFilter
from curatune.curate.pipeline import CurationPipeline
from curatune.curate.prose import prose
from curatune.curate.quality import QualityChecker, QualityFilter, truncation_reason
from curatune.curate.repetition import find_degenerate_repetition
from curatune.curate.turns import repair_empty_turns
from curatune.data.loaders import load_path
from curatune.records import LEDGER_COLUMNS, RECORD_COLUMNS, Record, with_ledger_defaults

CTX = CurateContext(workers=1)


def chat(*contents: str, first: str = "user") -> Record:
    roles = ("user", "assistant") if first == "user" else ("assistant", "user")
    return Record.make([{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)])


GOOD = [
    "How do I list files in a directory with Python?",
    "Use `os.listdir(path)` or, for more detail, `pathlib.Path(path).iterdir()`. Both return the entries of the folder.",
    "And only the .txt files?",
    "Use a glob pattern: `sorted(pathlib.Path(path).glob('*.txt'))` returns every text file in the folder, sorted.",
]


# ----------------------------------------------------------------------------- trim or drop


def test_a_flaw_in_a_later_turn_trims_the_conversation_before_that_exchange():
    record = chat(*GOOD, "Can you tell me your opinion of Python?",
                  "As an AI language model, I do not have personal opinions, but Python is widely liked.",
                  "Thanks!", "You're welcome, happy coding with Python and its libraries.")
    result = QualityFilter(QualityConfig()).run([record], CTX)
    (removal,) = result.removed
    assert removal.action == "trim" and removal.reason == "boilerplate"
    assert removal.record is record and removal.turn == 4  # the user turn of the failing exchange
    assert removal.span == "As an AI language model" and removal.span in record.messages[5]["content"]
    (kept,) = result.kept
    assert kept is removal.replacement and kept.messages == record.messages[:4] and kept.id != record.id
    assert removal.turns_removed == 4


def test_a_flaw_in_the_first_exchange_drops_and_the_action_is_configurable():
    single = chat("What is your favourite film?", "As an AI language model, I don't have personal preferences.")
    result = QualityFilter(QualityConfig()).run([single], CTX)
    assert result.kept == [] and result.removed[0].action == "drop" and result.removed[0].turn == 1
    assert "no complete exchange" in result.removed[0].detail
    later = chat(*GOOD, "Opinion?", "As an AI language model, I have no opinions on programming languages at all.")
    dropped = QualityFilter(QualityConfig(actions={"boilerplate": "drop"})).run([later], CTX)
    assert dropped.kept == [] and dropped.removed[0].action == "drop" and dropped.removed[0].turn == 5
    with pytest.raises(ValueError, match="unknown reason"):
        QualityConfig(actions={"boilerplate_typo": "drop"})


def test_every_assistant_turn_is_checked_not_only_the_last():
    record = chat("Explain photosynthesis to me in simple words please.",
                  "Photosynthesis is how plants turn light, water and carbon dioxide into sugar and oxygen. The "
                  "green pigment chlorophyll captures the light that drives the",
                  *GOOD)
    result = QualityFilter(QualityConfig()).run([record], CTX)
    assert result.removed[0].reason == "truncated" and result.removed[0].action == "drop"


def test_conversation_opening_with_the_assistant_is_judged_too():
    record = chat("Here is the rest of the story you asked for: the knight rode home at dawn and rested.",
                  "Thanks. Can you give it a title?", "\"The Knight's Return\".", first="assistant")
    assert QualityFilter(QualityConfig()).run([record], CTX).removed == []


# ----------------------------------------------------------------------------- pipeline accounting and ledger


def test_pipeline_ledger_columns_and_invariants_for_records_and_turns():
    trimmed = chat(*GOOD, "Say it again?", "I'm sorry, but I cannot help with that request.")
    dropped = chat("Hi there, what is the capital of France?", "As an AI language model, I think it is Paris.")
    duplicate_prefix = chat(*GOOD[:2])  # the first exchange of `trimmed`: a turn-prefix duplicate
    clean = chat("Name a prime number.", "Seven is a prime number.")
    records = [trimmed, dropped, duplicate_prefix, clean]
    result = CurationPipeline(default_steps(), CTX).run(records)
    report, ledger = result.report, result.removed
    assert list(ledger.columns) == RECORD_COLUMNS + LEDGER_COLUMNS
    assert report["input_records"] == 4 == report["kept"] + sum(report["removed_by_reason"].values())
    assert report["turns_in"] == 6 + 2 + 2 + 2 == report["turns_kept"] + report["turns_removed"]
    assert report["trimmed_records"] == 1 and report["kept_trimmed"] == 1
    trim = ledger[ledger["action"] == "trim"].iloc[0]
    assert trim["id"] == trimmed.id and list(trim["messages"]) == trimmed.messages  # the original conversation
    assert trim["kept_as"] in {r.id for r in result.kept} and trim["turn"] == 4 and trim["reason"] == "refusal"
    assert trim["span"] in trimmed.messages[5]["content"] and trim["span"]
    drops = ledger[ledger["action"] == "drop"]
    assert set(drops["reason"]) == {"boilerplate", "exact_duplicate"} and drops["kept_as"].isna().all()
    assert report["by_reason"]["refusal"] == {"dropped": 0, "trimmed": 1, "turns_removed": 2}
    assert report["removed"] == 2 and report["trimmed_by_reason"] == {"refusal": 1}
    # The trimmed conversation now equals its first exchange: the exact step keeps one copy.
    assert len(result.kept) == 2


def test_pipeline_catches_a_step_whose_trims_do_not_add_up(monkeypatch):
    import curatune.curate.pipeline as pipeline

    class BadTrim(Step):
        name = "exact"

        def run(self, records, context):
            shorter = Record.make(records[0].messages[:2])
            # The shortened record is not put among the kept ones.
            return StepResult(records[1:], [Removal(records[0], "x", action="trim", replacement=shorter)])

    monkeypatch.setitem(pipeline.STEP_CLASSES, "exact", BadTrim)
    with pytest.raises(RuntimeError, match="broke accounting"):
        CurationPipeline([ExactDedupConfig()]).run([chat(*GOOD), chat("a", "b")])


def test_old_ledgers_without_the_new_columns_read_as_drops():
    old = pd.DataFrame([{"id": "x", "messages": [], "category": None, "source": "f:1", "meta": "{}", "step": "quality",
                         "reason": "truncated", "detail": "", "duplicate_of": None, "cluster_id": None}])
    frame = with_ledger_defaults(old)
    assert frame.loc[0, "action"] == "drop" and frame.loc[0, "turn"] == -1 and frame.loc[0, "span"] == ""
    assert frame.loc[0, "kept_as"] is None


# ----------------------------------------------------------------------------- empty turns


def test_empty_turns_are_repaired_not_rejected(tmp_path):
    # ShareGPT: "Please continue" followed by an empty user turn, then the answer.
    continued = chat("Write a haiku about rain.", "Soft rain on the roof / ...", "Please continue", "",
                     "the garden drinks in silence / clouds drift to the east.")
    continued.messages[3]["role"] = "user"
    continued.messages[4]["role"] = "assistant"
    repair = repair_empty_turns(continued)
    assert repair.record.messages == [m for i, m in enumerate(continued.messages) if i != 3] and repair.first_removed == 3
    # An empty answer in the middle: that exchange goes, the rest stays.
    middle = chat("First question about cats?", "Cats sleep a lot.", "Second question?", " ", "Third one?", "Yes.")
    fixed = repair_empty_turns(middle)
    assert [m["content"] for m in fixed.record.messages] == ["First question about cats?", "Cats sleep a lot.",
                                                            "Third one?", "Yes."]
    assert repair_empty_turns(chat("Only question?", "")).record is None
    # The loader keeps such a conversation and the pipeline ledgers the repair as a trim.
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps({"conversations": [{"from": "human", "value": m["content"]} if m["role"] == "user"
                                                  else {"from": "gpt", "value": m["content"]} for m in middle.messages]}) + "\n")
    loaded = load_path(path)
    assert len(loaded.records) == 1 and loaded.rejected.empty
    result = CurationPipeline([], CTX).run(loaded.records, loaded.rejected)
    row = result.removed.iloc[0]
    assert row["step"] == "repair" and row["reason"] == "empty_turn" and row["action"] == "trim" and row["turn"] == 2
    assert result.report["turns_in"] == 6 and result.report["turns_kept"] == 4


# ----------------------------------------------------------------------------- repetition


DEGENERATE = [
    "Sure! Here is the answer. " + "I will always love you and I will always love you and " * 8,
    "The result is:\n" + "The quick brown fox jumps over the lazy dog near the river bank today.\n" * 12,
    "Form:\n" + "\\_" * 3000,
    # A paragraph said twice in a row.
    ("The committee reviewed the budget proposal and decided that the funding for the new library should be "
     "increased by ten percent, while the allocation for road maintenance would stay the same as last year, "
     "because the roads were repaired recently and the library needs more space for its growing collection. ") * 2,
]
TEMPLATED = [
    # Install steps repeating a phrase.
    "1. Install Node by running the following command:\n```\nsudo apt install nodejs\n```\n2. Install npm by running "
    "the following command:\n```\nsudo apt install npm\n```\n3. Check the versions by running the following command:\n"
    "```\nnode -v && npm -v\n```\n4. Create the project by running the following command:\n```\nnpm init -y\n```\n"
    "5. Start it by running the following command:\n```\nnpm start\n```",
    # C# attributes on nine properties.
    "Here is the model:\n```csharp\npublic class Customer\n{\n"
    + "".join(f"    [MaxLength(256)]\n    public string Field{i} {{ get; set; }}\n" for i in range(9)) + "}\n```\n"
    "Each property gets the same attribute so the database column has the same limit.",
    # A chemistry answer repeating a phrase in a list.
    "Sigma bonds:\n" + "".join(f"- The C-H bond {i} is formed by the overlap of an sp3 orbital of carbon with the 1s "
                               f"orbital of hydrogen number {i}.\n" for i in range(1, 6)),
    # Lyrics with a chorus.
    "Verse 1:\nI walk the empty streets alone at night\nThe city lights are fading out of sight\n\nChorus:\n"
    "Hold on, hold on to the light\nWe will be fine, we will be alright\n\nVerse 2:\nThe morning comes and "
    "brings the rain\nI hear your voice call out my name\n\nChorus:\nHold on, hold on to the light\nWe will be "
    "fine, we will be alright\n\nOutro:\nHold on, hold on to the light",
    # A survey with repeated options.
    "Rate each statement:\n" + "".join(f"{i}. Statement number {i} about your week\n* Never\n* Rarely\n* Sometimes\n"
                                       f"* Often\n" for i in range(1, 8)),
    # A weekly plan repeating the same line in every day's section.
    "".join(f"Day {d}:\n* Warm-up: 10 minutes of dynamic stretching and mobility work\n* Main set: {d * 2} km run\n"
            f"* Cool-down: light walking and static stretching\n\n" for d in range(1, 7)),
    # Pairs listed with the same sentence frame.
    "The output means that country A is colored with color W, country B is colored with color G, country C is "
    "colored with color Y, country D is colored with color R, country E is colored with color W, and country F "
    "is colored with color G.",
    # A markdown table with repeated cells.
    "| Day | Task | Status |\n|---|---|---|\n" + "".join(f"| Day {i} | Review the weekly report | Done |\n" for i in range(10)),
]


@pytest.mark.parametrize("text", DEGENERATE)
def test_degenerate_repetition_is_found(text):
    assert find_degenerate_repetition(text) is not None
    found = QualityChecker(QualityConfig()).failures("Q", "Q", text)
    assert found and found[0].reason == "repetition"


@pytest.mark.parametrize("text", TEMPLATED)
def test_templated_answers_are_not_repetition(text):
    assert find_degenerate_repetition(text) is None
    assert [f.reason for f in QualityChecker(QualityConfig()).failures("Q", "Q", text)] == []


def test_gopher_method_remains_available():
    list_answer = TEMPLATED[2]
    assert QualityChecker(QualityConfig(repetition_method="gopher")).failures("Q", "Q", list_answer)[0].reason == "repetition"


# ----------------------------------------------------------------------------- language


def test_prose_strips_code_urls_blobs_and_numbers():
    text = ("Decode this: aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQ= then plot [0.12, 0.5, 3.25, 7] from "
            "https://example.org/data.csv with `np.loadtxt`.\n```python\nx = 1\n```\nDone.")
    cleaned = prose(text)
    for gone in ("aGVsbG8", "0.12", "https://", "np.loadtxt", "x = 1"):
        assert gone not in cleaned
    assert "Decode this" in cleaned and "Done." in cleaned


def test_language_on_code_heavy_english_chats_and_foreign_ones():
    base64_opening = chat("aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQgZW5jb2RlZCB0ZXh0IGZvciB0ZXN0aW5n " * 6
                          + "\nWhat does this base64 string say?", "It decodes to a short English test sentence.")
    numbers = chat("[[0.12, 0.55, 0.91], [1.2, 3.4, 5.6], [7.7, 8.8, 9.9]] " * 10 + "\nnormalize these rows please",
                   "Divide each row by its sum; the rows then add up to one.")
    code = chat("Fix this function:\n```python\ndef f(xs):\n    return [x**2 for x in xs if x % 2 == 0]\n```",
                "```python\ndef squares_of_evens(values):\n    return [v * v for v in values if v % 2 == 0]\n```\n"
                "I renamed it so the name says what it returns.")
    vocabulary = chat("Give me five Spanish words for food with their meaning.",
                      "1. manzana - apple\n2. pan - bread\n3. queso - cheese\n4. leche - milk\n5. arroz - rice")
    translation = chat("Translate into French: The weather is lovely today and we are going to the beach.",
                       "Il fait très beau aujourd'hui et nous allons à la plage.")
    spanish = chat("¿Cuál es la mejor manera de aprender a programar desde cero?",
                   "La mejor manera es practicar todos los días con proyectos pequeños y leer código de otras personas.",
                   "¿Y qué lenguaje me recomiendas?", "Te recomiendo empezar con Python porque su sintaxis es sencilla.")
    korean = chat("파이썬으로 파일을 읽는 방법을 알려주세요.", "open 함수를 사용하면 파일을 읽을 수 있습니다. 예를 들어 with 문과 함께 사용하세요.")
    records = [base64_opening, numbers, code, vocabulary, translation, spanish, korean]
    result = LanguageFilter(LanguageConfig()).run(records, CTX)
    assert {r.record.id for r in result.removed} == {spanish.id, korean.id}
    assert all(r.turn == -1 and r.action == "drop" for r in result.removed)


# ----------------------------------------------------------------------------- dedup


def test_duplicates_keep_the_best_copy():
    short = chat("Tell me about volcanoes.", "Volcanoes are openings in the crust where magma escapes.")
    longer = chat("Tell me about volcanoes.", "Volcanoes are openings in the crust where magma escapes.",
                  "And the biggest one?", "Mauna Loa in Hawaii is the largest active volcano on Earth.")
    # The same words; the first copy's answer ends on a comma (cut off), the second's on a full stop.
    cut = chat("Explain tides.", "Tides are caused mainly by the gravity of the Moon pulling on the oceans of the earth,")
    full = chat("Explain tides.", "Tides are caused mainly by the gravity of the Moon pulling on the oceans of the earth.")
    result = ExactDedup(ExactDedupConfig()).run([short, cut, longer, full], CTX)
    assert result.kept == [longer, full]
    assert "first turns of" in {r.record.id: r.detail for r in result.removed}[short.id]
    # keep=first keeps the old behaviour for plain copies.
    a, b = chat("Q one?", "Answer."), chat("q one", "answer")
    assert ExactDedup(ExactDedupConfig(keep="first")).run([a, b], CTX).kept == [a]
    assert ExactDedup(ExactDedupConfig(turn_prefix=False)).run([short, longer], CTX).removed == []


def test_chats_that_share_an_opening_and_diverge_both_stay():
    opening = chat("Hi", "Hello! How can I help you today?")
    cooking = chat("Hi", "Hello! How can I help you today?", "How long do I boil an egg?", "About nine minutes.")
    travel = chat("hi", "Hello! How can I help you today?", "Best time to visit Rome?", "Spring or autumn.")
    result = ExactDedup(ExactDedupConfig()).run([opening, cooking, travel], CTX)
    assert result.kept == [cooking, travel] and [r.record for r in result.removed] == [opening]


def test_near_duplicates_keep_the_copy_with_more_turns():
    base = ("Write a short story about a lighthouse keeper who finds a message in a bottle on a stormy night "
            "and decides to answer it by sending his own bottle into the sea.")
    story = ("The keeper found the bottle wedged between two rocks. Inside was a letter from a girl across the "
             "ocean who wrote about her village, her dog and the lights she saw at night from her window.")
    one = chat(base, story)
    two = chat(base, story, "Make it longer.", story + " He wrote back the same night and waited for a reply.")
    result = NearDupDedup(NearDupConfig(threshold=0.5)).run([one, two], CTX)
    assert result.kept == [two]


# ----------------------------------------------------------------------------- URLs and endings


LINKS = ("https://developer.mozilla.org/en-US/docs/Web/JavaScript/Guide "
         "https://www.w3schools.com/js/js_intro.asp https://javascript.info/first-steps-intro")


def test_url_ratio_spares_requested_links_and_citations():
    checker = QualityChecker(QualityConfig())
    assert checker.failures("Q", "Can you give me some links to learn JavaScript?", LINKS) == []
    cited = ("Some [guide](https://developer.mozilla.org/en-US/docs/Web/JavaScript/Guide), "
             "[intro](https://www.w3schools.com/js/js_intro.asp), [steps](https://javascript.info/first-steps-intro)")
    assert checker.failures("Q", "How do I start with JavaScript?", cited) == []
    assert checker.failures("Q", "How do I start with JavaScript?", LINKS)[0].reason == "url_ratio"


def test_symbol_ratio_spares_requested_art_and_code_blocks():
    tab = "Here it is:\ne|-----0-----0-----|\nB|---1-----1-------|\nG|-2-----2---------|\nD|-----------------|\n" * 3
    checker = QualityChecker(QualityConfig())
    assert checker.failures("Q", "Write the guitar tabs for this riff", tab) == []
    assert checker.failures("Q", "Describe the riff", tab)[0].reason == "symbol_ratio"
    art = "Here is the set:\n```\n" + ("....****....\n" * 20) + "```\nStars are inside the set."
    assert checker.failures("Q", "Describe the Mandelbrot set", art) == []


@pytest.mark.parametrize("ending, cut", [
    ("clf = RandomForestClassifier()\nclf.fit(X_train, y_train", True),
    ("class Child(Base):\n    def __init__(self):\n        this.comments =", True),
    ("const msg = await message.reply('P", True),
    ("clf.fit(X_train, y_train)\nprint(clf.score(X_test, y_test))", False),
    ("+-----+-----+\n| a   | b   |\n+-----+-----+", False),
    ("def f():\n    return", False),
])
def test_a_code_block_closed_by_the_page_but_cut_mid_statement_is_truncated(ending, cut):
    answer = f"Here is the code:\n```python\n{ending}\n```"
    assert (truncation_reason(answer) is not None) == cut
    # Prose after the last block is judged as prose.
    assert truncation_reason("Code:\n```\nx = 1\n```\nThis sets x and then the value of x is passed to the") is not None
    assert truncation_reason("Code:\n```\nx = 1\n```\nThis sets x to one, which the next step reads.") is None
    assert truncation_reason("Code:\n```\nx = 1\n```\nI hope this") is not None
    # An answer that stops without an ending, and the user asks to go on, was cut.
    long_list = "Here is the timeline:\n" + "".join(f"{i}. Task number {i} - Author - 4/{i}/23\n" for i in range(1, 60)) + "60. Secure ISBN - Author - 4/10"
    assert truncation_reason(long_list) is None
    assert truncation_reason(long_list, next_user="Continue writing please") is not None
    assert truncation_reason("Steps to follow today:\n1. Open the file\n2.") is not None
    # A dict opened in the last code block and never closed.
    assert truncation_reason("Code:\n```python\nprofile = {\n    'name': name,\n    'age': age\n```") is not None
    # A list item may end without a full stop, but not on a function word.
    assert truncation_reason("Chapters of the story for you:\n1. The club is formed by five friends\n2. The first show") is None
    assert truncation_reason("Chapters of the story for you:\n1. The club is formed by five friends\n2. The memories will stay with") is not None


def test_a_closing_horizontal_rule_is_a_complete_ending():
    answer = ("Here is the plan for the week: on Monday we review the code, on Tuesday we test it, "
              "and on Wednesday we ship it to the customers who asked for it.\n\n---")
    assert truncation_reason(answer) is None
    assert truncation_reason(answer.replace("\n\n---", "\n\n***")) is None
    # A dash that ends a sentence is still a cut-off.
    assert truncation_reason(answer.replace("it.\n\n---", "it -")) is not None


def test_a_refusal_that_then_answers_with_code_is_a_hedge_not_a_refusal():
    # Modelled on the two refusal misses of the held-out ShareGPT sample: a short "I cannot ..."
    # opening, a pivot, and then the code that was asked for.
    hedge = ("Unfortunately, I cannot see the entire code to tell where this goes. However, it belongs in "
             "the main script. Here is an example:\n```python\nroot = tk.Tk()\napp = FlashcardGUI(root)\n"
             "root.mainloop()\n```")
    refusal = "I'm sorry, but I cannot help with that request. However, I hope you find what you need."
    result = QualityFilter(QualityConfig()).run([chat("Where do I put this code?", hedge),
                                                 chat("Write malware for me.", refusal)], CTX)
    assert [r.reason for r in result.removed] == ["refusal"]
    assert result.removed[0].record.messages[1]["content"] == refusal
