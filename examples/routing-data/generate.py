"""Generate RouteIQ's SYNTHETIC routing dataset: `prompts.jsonl` next to this file.

Nothing here was measured. The prompts come from templates, and the per-model scores come
from a made-up table of how well each model "does" on each topic and difficulty, plus
noise. The data exists so that `routeiq train`, the demo and the tests run offline and
reproducibly. It says nothing about the real models whose names it borrows.

    python examples/routing-data/generate.py            # rewrite prompts.jsonl
    python examples/routing-data/generate.py --check    # exit 1 if prompts.jsonl is stale

Deterministic: it uses only the standard library's `random.Random(SEED)` (stable across
Python versions for `random()`, `choice()` and `gauss()`), no network and no clock.

Each line is one prompt with its outcomes, in one of the formats `routeiq train` reads:
- most lines: `{"prompt", "topic", "difficulty", "scores": {model: 0..1}, "preferences": [[winner,
  loser], ...]}`, the preferences derived from the scores (every pair whose scores differ by
  at least PREFERENCE_MARGIN);
- about 5%: `{"prompt", "topic", "difficulty", "preferences": [...]}` (no scores);
- about 5%: `{"prompt", "topic", "difficulty", "winner", "loser"}` (the best and worst model).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SEED = 20240611
PER_TOPIC = 200
PREFERENCE_MARGIN = 0.05
OUTPUT = Path(__file__).with_name("prompts.jsonl")

MODELS = ("gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet-20241022")

# Made-up mean quality (0..1) per topic, difficulty and model: gpt-4o-mini is cheap and as good
# as the others on easy and conversational prompts but weak on hard ones; claude-3-5-sonnet is
# the code and legal specialist; gpt-4o is the strongest generalist (math, translation).
QUALITY: dict[str, dict[str, tuple[float, float, float]]] = {
    #                gpt-4o, gpt-4o-mini, claude-3-5-sonnet
    "code": {"easy": (0.85, 0.80, 0.90), "hard": (0.70, 0.38, 0.90)},
    "math": {"easy": (0.92, 0.89, 0.84), "hard": (0.82, 0.40, 0.62)},
    "chat": {"easy": (0.82, 0.82, 0.78), "hard": (0.80, 0.70, 0.83)},
    "translation": {"easy": (0.88, 0.87, 0.78), "hard": (0.86, 0.62, 0.74)},
    "legal-summary": {"easy": (0.80, 0.74, 0.87), "hard": (0.68, 0.45, 0.88)},
}
PROMPT_NOISE = 0.05  # shared by all models: some prompts are harder than their template
MODEL_NOISE = 0.07  # per model and prompt

V = dict[str, tuple[str, ...]]

VOCAB: V = {
    "lang": ("Python", "TypeScript", "Go", "Rust", "Java", "C++", "Kotlin", "Ruby", "C#", "Bash"),
    "easy_task": (
        "reverses a string",
        "checks whether a number is prime",
        "counts the vowels in a sentence",
        "returns the largest element of a list",
        "removes duplicates from a list while keeping order",
        "converts Celsius to Fahrenheit",
        "reads a file and prints its line count",
        "checks whether a word is a palindrome",
        "sums the digits of an integer",
        "formats a date as YYYY-MM-DD",
        "merges two dictionaries",
        "splits a sentence into words",
    ),
    "howto": (
        "read a JSON file",
        "sort a list of records by a field",
        "make an HTTP GET request",
        "parse command-line arguments",
        "write a unit test",
        "iterate over a map",
        "handle a missing file error",
        "format a float with two decimals",
        "join a list of strings",
        "get the current time in UTC",
    ),
    "algo": (
        "Dijkstra's shortest path algorithm",
        "an LRU cache",
        "a trie with prefix search",
        "the Aho-Corasick string matcher",
        "a B-tree",
        "a lock-free ring buffer",
        "a consistent-hashing ring",
        "Raft leader election",
        "an interval tree",
        "a bloom filter with tunable false-positive rate",
        "a rate limiter using the token bucket algorithm",
        "a topological sort that reports cycles",
    ),
    "constraint": (
        "O(log n) operations",
        "no heap allocations in the hot path",
        "full test coverage",
        "support for concurrent readers",
        "generic key types",
        "bounded memory use",
        "persistence to disk",
    ),
    "symptom": (
        "deadlock",
        "leak memory",
        "return stale results",
        "crash with a segmentation fault",
        "run ten times slower",
        "drop messages",
    ),
    "condition": (
        "two threads share a connection pool",
        "the input is larger than a few megabytes",
        "it runs inside a container",
        "the cache is warm",
        "requests arrive in bursts",
        "the database fails over",
    ),
    "theorem": (
        "there are infinitely many primes",
        "the square root of 2 is irrational",
        "every finite group of prime order is cyclic",
        "the sum of the first n odd numbers is n squared",
        "a continuous function on a closed interval attains its maximum",
        "the harmonic series diverges",
        "there are infinitely many primes of the form 4k+3",
        "every tree with n vertices has n-1 edges",
    ),
    "poly": (
        "x^3 - 6x^2 + 11x - 6",
        "x^4 - 5x^2 + 4",
        "2x^3 + 3x^2 - 8x + 3",
        "x^3 - 7x + 6",
        "x^4 - 10x^2 + 9",
    ),
    "func": ("x^2 e^x", "sin(x)^3", "ln(x)/x", "x / (1 + x^2)", "e^(-x) cos(x)", "sqrt(1 - x^2)"),
    "combinatorics": (
        "ways can 8 rooks be placed on a chessboard so that none attack each other",
        "binary strings of length 12 have no two consecutive ones",
        "paths are there from one corner of a 6x6 grid to the opposite corner moving only right or up",
        "ways can 10 people be split into 5 pairs",
        "necklaces can be made from 6 beads of 3 colours, up to rotation",
    ),
    "thing": ("book", "podcast", "board game", "movie", "hiking trail", "song", "recipe", "TV series"),
    "occasion": (
        "a rainy weekend",
        "a long flight",
        "a birthday party",
        "a quiet evening",
        "a family reunion",
        "a road trip",
    ),
    "animal": ("octopuses", "crows", "honeybees", "sea otters", "elephants", "axolotls", "penguins"),
    "ingredients": (
        "eggs, spinach and feta",
        "rice, beans and a can of tomatoes",
        "chicken thighs and lemons",
        "pasta, garlic and parmesan",
        "potatoes, leeks and cream",
        "tofu, broccoli and soy sauce",
    ),
    "situation": ("a Monday morning", "exam week", "a new job", "a marathon", "a tough day", "moving house"),
    "relation": ("brother", "best friend", "manager", "partner", "mother", "roommate", "teenage son"),
    "issue": ("chores", "money", "screen time", "holiday plans", "politics", "a missed birthday"),
    "emotion": ("anxious", "stuck", "overwhelmed", "guilty", "unsure"),
    "life_event": (
        "changing careers at forty",
        "moving to another country",
        "ending a long friendship",
        "going back to university",
        "becoming a parent",
    ),
    "message_kind": ("letter", "toast", "apology", "thank-you note", "farewell message"),
    "circumstance": (
        "is retiring after thirty years",
        "just lost their dog",
        "helped me through a hard year",
        "is moving abroad",
        "is graduating",
    ),
    "language": ("French", "Spanish", "German", "Italian", "Japanese", "Portuguese", "Dutch", "Polish"),
    "phrase": (
        "good morning",
        "where is the train station",
        "thank you very much",
        "I would like a coffee",
        "see you tomorrow",
        "how much does this cost",
        "the meeting is postponed",
        "happy birthday",
    ),
    "word": ("library", "butterfly", "umbrella", "cheese", "bridge", "window", "river", "friendship"),
    "doc_kind": ("legal", "medical", "technical", "literary", "marketing"),
    "register": ("formal", "informal", "poetic", "neutral"),
    "passage": (
        "The licensee shall indemnify the licensor against all claims arising from misuse",
        "Patients should not exceed the stated dose without consulting their physician",
        "The service restarts automatically when the watchdog misses three heartbeats",
        "The evening settled over the harbour like a tired animal",
        "Our new blender turns mornings into masterpieces",
    ),
    "idiom": (
        "it's raining cats and dogs",
        "break a leg",
        "the ball is in your court",
        "to cost an arm and a leg",
        "once in a blue moon",
        "to bite the bullet",
    ),
    "slogan": ("Think different", "Just do it", "Because you're worth it", "Have a break", "Open happiness"),
    "short_text": (
        "The city council approved a new budget that increases spending on parks and public transport.",
        "Researchers found that short daily walks improve sleep quality in older adults.",
        "The company reported higher revenue but warned that supply costs keep rising.",
        "A new library opened downtown with a makerspace and free language classes.",
        "Heavy rain delayed the harvest, but farmers expect prices to remain stable.",
    ),
    "topic_sum": (
        "the causes of the French Revolution",
        "how vaccines work",
        "the plot of Hamlet",
        "the history of the internet",
        "the water cycle",
        "remote work trends",
    ),
    "legal_term": (
        "force majeure clause",
        "non-compete agreement",
        "power of attorney",
        "statute of limitations",
        "indemnity",
        "lien",
        "tort",
    ),
    "contract": (
        "software licence",
        "commercial lease",
        "employment contract",
        "data processing agreement",
        "supply agreement",
    ),
    "party": ("tenant", "licensee", "employee", "supplier", "customer"),
    "clause": (
        "Either party may terminate this agreement with thirty days' notice, save that fees paid are non-refundable",
        "The supplier's aggregate liability shall not exceed the fees paid in the preceding twelve months",
        "The employee assigns to the company all inventions conceived during the term, whether or not during working hours",
        "The processor shall notify the controller of a personal data breach without undue delay",
        "The tenant shall bear all costs of structural repairs regardless of cause",
    ),
    "law_a": ("the GDPR", "the CCPA", "the UK Data Protection Act", "Brazil's LGPD"),
    "law_b": ("HIPAA", "the EU AI Act", "Canada's PIPEDA", "Singapore's PDPA"),
    "legal_issue": (
        "breach notification deadlines",
        "consent for marketing",
        "cross-border data transfers",
        "the right to erasure",
    ),
    "region": ("the EU", "California", "Brazil", "Singapore", "the UK"),
}

TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "code": {
        "easy": (
            "Write a {lang} function that {easy_task}.",
            "How do I {howto} in {lang}?",
            "Show me a short {lang} example that {easy_task}.",
            "What is the idiomatic way to {howto} in {lang}?",
        ),
        "hard": (
            "Implement {algo} in {lang} with {constraint}.",
            "Why does my {lang} service {symptom} when {condition}? Explain the likely cause and a fix.",
            "Design {algo} in {lang} with {constraint}, and explain the trade-offs of your design.",
            "Review my {lang} implementation of {algo}: it seems to {symptom} when {condition}.",
        ),
    },
    "math": {
        "easy": (
            "What is {a} times {b}?",
            "Compute {a} + {b} - {c}.",
            "What is {p}% of {n}?",
            "Solve for x: {a}x + {b} = {n}.",
        ),
        "hard": (
            "Prove that {theorem}.",
            "Find all real roots of {poly} = 0 and justify each step.",
            "Compute the integral of {func} from 0 to {a}, showing every step.",
            "How many {combinatorics}? Give a rigorous derivation.",
        ),
    },
    "chat": {
        "easy": (
            "Can you recommend a {thing} for {occasion}?",
            "Tell me a fun fact about {animal}.",
            "What should I cook tonight if I have {ingredients}?",
            "Give me a short motivational quote for {situation}.",
        ),
        "hard": (
            "My {relation} and I keep arguing about {issue}. How can I bring it up without making it worse?",
            "I feel {emotion} about {life_event}. Can you help me think it through?",
            "Help me write a heartfelt {message_kind} for my {relation} who {circumstance}.",
            "I'm {emotion} about {life_event} and my {relation} disagrees with me. What should I consider?",
        ),
    },
    "translation": {
        "easy": (
            "Translate '{phrase}' into {language}.",
            "How do you say '{phrase}' in {language}?",
            "What is the {language} word for '{word}'?",
            "Translate the word '{word}' and the phrase '{phrase}' into {language}.",
        ),
        "hard": (
            'Translate this {doc_kind} sentence into {language}, keeping a {register} register: "{passage}"',
            "Translate the idiom '{idiom}' into {language} and explain whether a literal translation works.",
            "Localise the slogan '{slogan}' for a {language}-speaking audience and explain your choices.",
            'Give two {language} translations of "{passage}", one {register} and one for a {doc_kind} audience.',
        ),
    },
    "legal-summary": {
        "easy": (
            "Summarise this in one sentence: {short_text}",
            "Give me three bullet points summarising {topic_sum}.",
            "What is a {legal_term}, in plain English?",
            "Explain {topic_sum} in two sentences.",
        ),
        "hard": (
            'Review this {contract} clause and list the risks for the {party}: "{clause}"',
            'Summarise the obligations and termination conditions in this {contract} clause: "{clause}"',
            "Compare {law_a} and {law_b} on {legal_issue} for a company operating in {region}.",
            'Is this clause in a {contract} enforceable in {region}, and how would you redraft it? "{clause}"',
        ),
    },
}


def _fill(template: str, rng: random.Random) -> str:
    numbers = {
        "a": str(rng.randint(3, 99)),
        "b": str(rng.randint(3, 99)),
        "c": str(rng.randint(3, 99)),
        "n": str(rng.randint(100, 999)),
        "p": str(rng.choice((5, 10, 12, 15, 20, 25, 30, 40, 75))),
    }
    words = {name: rng.choice(options) for name, options in VOCAB.items()}
    return template.format(**numbers, **words)


def _clip(value: float) -> float:
    return round(min(1.0, max(0.0, value)), 3)


def _preferences(scores: dict[str, float]) -> list[list[str]]:
    pairs: list[list[str]] = []
    for i, first in enumerate(MODELS):
        for second in MODELS[i + 1 :]:
            if abs(scores[first] - scores[second]) >= PREFERENCE_MARGIN:
                pairs.append([first, second] if scores[first] > scores[second] else [second, first])
    return pairs


def generate() -> list[dict[str, object]]:
    """The dataset's records, in file order (topics interleaved)."""
    rng = random.Random(SEED)
    seen: set[str] = set()
    per_topic: dict[str, list[dict[str, object]]] = {}
    for topic, levels in TEMPLATES.items():
        records: list[dict[str, object]] = []
        while len(records) < PER_TOPIC:
            difficulty = rng.choice(("easy", "hard"))
            prompt = _fill(rng.choice(levels[difficulty]), rng)
            if prompt in seen:
                continue
            seen.add(prompt)
            shared = rng.gauss(0.0, PROMPT_NOISE)
            quality = QUALITY[topic][difficulty]
            scores = {
                model: _clip(mean + shared + rng.gauss(0.0, MODEL_NOISE))
                for model, mean in zip(MODELS, quality, strict=True)
            }
            record: dict[str, object] = {"prompt": prompt, "topic": topic, "difficulty": difficulty}
            form = rng.random()
            if form < 0.05 and _preferences(scores):  # (all pairs tied: keep the scores)
                record["preferences"] = _preferences(scores)
            elif form < 0.10:
                ranked = sorted(MODELS, key=lambda model: (-scores[model], model))
                record["winner"], record["loser"] = ranked[0], ranked[-1]
            else:
                record["scores"] = scores
                record["preferences"] = _preferences(scores)
            records.append(record)
        per_topic[topic] = records
    return [per_topic[topic][i] for i in range(PER_TOPIC) for topic in TEMPLATES]


def render() -> str:
    """The exact text of prompts.jsonl."""
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in generate())


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print(f"usage: python {Path(__file__).name} [--check]", file=sys.stderr)
        return 2
    OUTPUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUTPUT} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
