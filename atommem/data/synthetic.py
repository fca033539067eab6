"""Synthetic long-context QA shaped like the real task, small enough for a tiny CPU policy.

Each sample invents `num_entities` people (pronounceable made-up words), gives each a value for
`num_attributes` attributes (and, when 2-hop questions are on, a `friend` among the others), and writes
the facts as short lines `"{entity} {attribute} {value} ."`, `facts_per_chunk` per document. Every
word is preceded by a space, the first of a document too (`"notes 3\n zorp city lima ."`), so a
byte-level BPE sees the same token " zorp" in chunks, questions, memory and the oracle's actions.
Questions are `"{attribute} of {entity} ?"` or, 2-hop, `"{attribute} of friend of {entity} ?"`; the
answer is one value word. Facts nobody asks about (other people, unasked attributes) are the
distractors. `doc_num` above what the facts need pads with documents about extra people, so any context
length can be made. Everything is seeded: the same config and seed give the same samples.
`Sample.metadata` keeps the facts and, per question, the chain of facts that answers it.

`task: revisions` (1-hop only) makes memory management decide the score: a share (`revised_fraction`) of
the asked (entity, attribute) keys is restated later in the stream with a new value, 1..`max_revisions`
times; the latest statement is the gold answer, so an agent must update what it stored. With
`one_entity_questions` a sample's questions all ask about one person (a profile that keeps changing);
`entity_near_misses: false` leaves out the asked people's other facts, so every near miss shares only
the attribute (a tiny policy then tells a needed fact by its person alone). `subject` fixes who is asked
about (say "user": the assistant's memory of its own user, whose profile keeps changing, among facts about
other people); the other people stay invented names. Every document
holds exactly `facts_per_chunk` lines and at most one statement of an asked key; the other lines are near
misses (facts of the same people nobody asks about: they share the entity or the attribute of an asked
key), then, up to `doc_num` documents, facts about outside people. `metadata["turn_states"]` tells the
env which kind of state each chunk is (`revision`, `relevant`, else `distractor`) for per-state metrics.
"""

from __future__ import annotations

import itertools
import random

from atommem.config import ConfigError, SynthConfig
from atommem.data.schema import Document, Question, Sample

RELATION = "friend"
UNKNOWN = "unknown"  # what the oracle answers when the fact is missing from memory

# Attribute -> value words; all values are distinct single lowercase words.
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "city": ("lima", "oslo", "paris", "rome", "cairo", "delhi", "tokyo", "quito", "dakar", "seoul", "riga", "kyiv"),
    "color": ("red", "blue", "green", "pink", "gray", "black", "white", "brown", "gold", "teal", "navy", "olive"),
    "pet": ("cat", "dog", "owl", "fox", "frog", "goat", "horse", "mouse", "snake", "duck", "hen", "crab"),
    "job": ("baker", "nurse", "judge", "pilot", "chef", "miner", "farmer", "tailor", "barber", "guard", "monk", "clerk"),
    "food": ("rice", "bread", "soup", "cake", "pasta", "beans", "corn", "pie", "fish", "salad", "stew", "tacos"),
    "sport": ("golf", "chess", "tennis", "rugby", "polo", "judo", "boxing", "karate", "hockey", "surf", "darts", "skiing"),
    "drink": ("tea", "milk", "juice", "cocoa", "cider", "water", "soda", "coffee", "wine", "beer", "kefir", "lemonade"),
    "fruit": ("apple", "pear", "plum", "mango", "lime", "grape", "peach", "melon", "cherry", "kiwi", "banana", "lemon"),
    "car": ("jeep", "van", "truck", "sedan", "taxi", "bus", "coupe", "wagon", "buggy", "cab", "limo", "tram"),
    "tool": ("saw", "drill", "axe", "rake", "spade", "wrench", "hammer", "chisel", "shovel", "ladder", "hoe", "pliers"),
}
ATTRIBUTES: tuple[str, ...] = tuple(ATTRIBUTE_VALUES)
FIXED_WORDS: tuple[str, ...] = ("of", "?", ".", "notes", RELATION, UNKNOWN)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "k", "m", "n", "p", "r", "s", "t", "x")
_NAME_POOL_SEED = 20260108  # fixed: the name pool depends on `name_vocab` only, never on the data seed


def _reserved_words() -> set[str]:
    return set(FIXED_WORDS) | set(ATTRIBUTES) | {v for vals in ATTRIBUTE_VALUES.values() for v in vals}


def name_pool(size: int) -> list[str]:
    """`size` invented lowercase names (CV-CV[C] syllables), deterministic and disjoint from the fixed words."""
    reserved = _reserved_words()
    candidates = [
        o1 + v1 + o2 + v2 + c
        for o1, v1, o2, v2, c in itertools.product(_ONSETS, _VOWELS, _ONSETS, _VOWELS, _CODAS)
        if o1 + v1 + o2 + v2 + c not in reserved
    ]
    if size > len(candidates):
        raise ConfigError(f"data.synth.name_vocab: {size} names requested, the generator can make {len(candidates)}")
    return sorted(random.Random(_NAME_POOL_SEED).sample(candidates, size))


def synthetic_vocabulary(cfg: SynthConfig) -> list[str]:
    """Every word the generator can emit: names, attributes, values and fixed words (sorted, unique)."""
    return sorted(set(name_pool(cfg.name_vocab)) | _reserved_words() | ({cfg.subject} if cfg.subject else set()))


def fact_text(entity: str, attribute: str, value: str) -> str:
    """The memory-friendly form of a fact: what the oracle stores, the line minus its period."""
    return f"{entity} {attribute} {value}"


def _check(cfg: SynthConfig) -> None:
    if cfg.num_entities < 1:
        raise ConfigError(f"data.synth.num_entities must be >= 1, got {cfg.num_entities}")
    if not 1 <= cfg.num_attributes <= len(ATTRIBUTES):
        raise ConfigError(f"data.synth.num_attributes must be in 1..{len(ATTRIBUTES)}, got {cfg.num_attributes}")
    if cfg.facts_per_chunk < 1:
        raise ConfigError(f"data.synth.facts_per_chunk must be >= 1, got {cfg.facts_per_chunk}")
    if not 1 <= cfg.min_questions <= cfg.max_questions:
        raise ConfigError(
            f"data.synth: need 1 <= min_questions <= max_questions, got {cfg.min_questions}, {cfg.max_questions}"
        )
    if not 0.0 <= cfg.two_hop_fraction <= 1.0:
        raise ConfigError(f"data.synth.two_hop_fraction must be in [0, 1], got {cfg.two_hop_fraction}")
    if cfg.two_hop_fraction > 0 and cfg.num_entities < 2:
        raise ConfigError("data.synth: 2-hop questions need num_entities >= 2 (a friend must be someone else)")
    if cfg.num_entities > cfg.name_vocab:
        raise ConfigError(f"data.synth.name_vocab ({cfg.name_vocab}) must be >= num_entities ({cfg.num_entities})")
    if cfg.subject is not None:
        if cfg.task != "revisions" or not cfg.one_entity_questions:
            raise ConfigError("data.synth.subject needs task: revisions and one_entity_questions: true (the subject is the one person asked about)")
        if not (cfg.subject.isalpha() and cfg.subject.islower()) or cfg.subject in _reserved_words():
            raise ConfigError(f"data.synth.subject {cfg.subject!r} must be one lowercase word that is not an attribute, value or fixed word")
    if cfg.task == "revisions":
        if cfg.two_hop_fraction > 0:
            raise ConfigError("data.synth.task=revisions asks 1-hop questions only: set two_hop_fraction to 0")
        if not 0.0 <= cfg.revised_fraction <= 1.0:
            raise ConfigError(f"data.synth.revised_fraction must be in [0, 1], got {cfg.revised_fraction}")
        if cfg.max_revisions < 1:
            raise ConfigError(f"data.synth.max_revisions must be >= 1, got {cfg.max_revisions}")
        if max(len(vals) for vals in ATTRIBUTE_VALUES.values()) <= cfg.max_revisions:
            raise ConfigError(f"data.synth.max_revisions={cfg.max_revisions}: a key runs out of new values")
        statements = cfg.max_questions * (1 + cfg.max_revisions)
        if cfg.doc_num is not None and cfg.doc_num < statements:
            raise ConfigError(
                f"data.synth.doc_num={cfg.doc_num} is too small for task=revisions: max_questions x (1 + max_revisions)"
                f" = {statements} statements of asked keys need one document each"
            )


def _one_sample(cfg: SynthConfig, names: list[str], rng: random.Random, sample_id: str) -> Sample:
    entities = rng.sample(names, cfg.num_entities)
    attributes = rng.sample(ATTRIBUTES, cfg.num_attributes)
    value = {(e, a): rng.choice(ATTRIBUTE_VALUES[a]) for e in entities for a in attributes}
    with_friends = cfg.two_hop_fraction > 0
    if with_friends:
        for e in entities:
            value[(e, RELATION)] = rng.choice([o for o in entities if o != e])
    facts = [[e, a, v] for (e, a), v in value.items()]

    # Questions: distinct (hops, entity, attribute) picks; 2-hop with probability two_hop_fraction.
    possible = len(entities) * len(attributes) * (2 if with_friends else 1)
    n_questions = min(rng.randint(cfg.min_questions, cfg.max_questions), possible)
    asked: set[tuple[bool, str, str]] = set()
    questions: list[Question] = []
    chains: list[dict] = []
    while len(questions) < n_questions:
        two_hop = with_friends and rng.random() < cfg.two_hop_fraction
        e, a = rng.choice(entities), rng.choice(attributes)
        if (two_hop, e, a) in asked:
            continue
        asked.add((two_hop, e, a))
        if two_hop:
            friend = value[(e, RELATION)]
            chain = [[e, RELATION, friend], [friend, a, value[(friend, a)]]]
            text = f"{a} of {RELATION} of {e} ?"
        else:
            chain = [[e, a, value[(e, a)]]]
            text = f"{a} of {e} ?"
        questions.append(Question(text, [chain[-1][2]]))
        chains.append({"entity": e, "path": [f[1] for f in chain], "facts": chain})

    # Padding documents (long-context variant): facts about people outside the sample.
    needed_docs = -(-len(facts) // cfg.facts_per_chunk)
    doc_num = cfg.doc_num if cfg.doc_num is not None else needed_docs
    if doc_num < needed_docs:
        raise ConfigError(
            f"data.synth.doc_num={doc_num} is too small: {len(facts)} facts at facts_per_chunk="
            f"{cfg.facts_per_chunk} need {needed_docs} documents"
        )
    filler_slots = doc_num * cfg.facts_per_chunk - len(facts) if cfg.doc_num is not None else 0
    others = [n for n in names if n not in set(entities)]
    rng.shuffle(others)
    filler: list[list[str]] = []
    while len(filler) < filler_slots:
        if not others:
            raise ConfigError(
                f"data.synth.doc_num={doc_num}: not enough invented names for the padding; raise name_vocab"
            )
        person = others.pop()
        for a in rng.sample(ATTRIBUTES, len(ATTRIBUTES)):
            filler.append([person, a, rng.choice(ATTRIBUTE_VALUES[a])])
    filler = filler[:filler_slots]

    lines = facts + filler
    rng.shuffle(lines)
    texts = ["".join(f" {e} {a} {v} ." for e, a, v in lines[k * cfg.facts_per_chunk : (k + 1) * cfg.facts_per_chunk])
             for k in range(doc_num)]
    documents = [Document(title, text) for title, text in zip(_titles(cfg, doc_num, rng), texts)]
    return Sample(
        id=sample_id,
        source="synthetic",
        documents=documents,
        questions=questions,
        metadata={"facts": facts, "filler_facts": filler, "chains": chains, "entities": entities, "attributes": attributes},
    )


def _titles(cfg: SynthConfig, doc_num: int, rng: random.Random) -> list[str]:
    """Document titles "notes N": N the position, or distinct random numbers below 100 (drawn last, so the rest of
    a sample is the same either way)."""
    if cfg.numbered_titles == "position":
        return [f"notes {k}" for k in range(doc_num)]
    return [f"notes {n}" for n in rng.sample(range(max(100, doc_num)), doc_num)]


def _outside_facts(names: list[str], entities: list[str], count: int, rng: random.Random) -> list[list[str]]:
    """`count` facts about people outside the sample (padding), every attribute of one person before the next."""
    others = [n for n in names if n not in set(entities)]
    rng.shuffle(others)
    out: list[list[str]] = []
    while len(out) < count:
        if not others:
            raise ConfigError("data.synth.doc_num: not enough invented names for the padding; raise name_vocab")
        person = others.pop()
        out.extend([person, a, rng.choice(ATTRIBUTE_VALUES[a])] for a in rng.sample(ATTRIBUTES, len(ATTRIBUTES)))
    return out[:count]


def _revision_sample(cfg: SynthConfig, names: list[str], rng: random.Random, sample_id: str) -> Sample:
    if cfg.subject is not None:
        entities = [cfg.subject] + rng.sample(names, cfg.num_entities - 1)
    else:
        entities = rng.sample(names, cfg.num_entities)
    attributes = rng.sample(ATTRIBUTES, cfg.num_attributes)
    value = {(e, a): rng.choice(ATTRIBUTE_VALUES[a]) for e in entities for a in attributes}
    n_questions = min(rng.randint(cfg.min_questions, cfg.max_questions), len(value))
    if cfg.one_entity_questions:
        subject = cfg.subject or rng.choice(entities)
        asked = [(subject, a) for a in rng.sample(attributes, min(n_questions, len(attributes)))]
    else:
        asked = rng.sample(sorted(value), n_questions)

    # Each asked key's values in stream order: the first statement, then its revisions (always a new value).
    history: dict[tuple[str, str], list[str]] = {}
    for key in asked:
        values = [value[key]]
        if rng.random() < cfg.revised_fraction:
            fresh = [v for v in ATTRIBUTE_VALUES[key[1]] if v != values[0]]
            values += rng.sample(fresh, rng.randint(1, cfg.max_revisions))
        history[key] = values

    # One document per statement of an asked key (keys interleaved, each key's own order kept).
    order = [key for key in asked for _ in history[key]]
    rng.shuffle(order)
    per_doc = cfg.facts_per_chunk
    asked_people = {e for e, _ in asked}
    near_miss = [[e, a, v] for (e, a), v in value.items()
                 if (e, a) not in history and (cfg.entity_near_misses or e not in asked_people)]
    rng.shuffle(near_miss)
    doc_num = cfg.doc_num if cfg.doc_num is not None else max(len(order), -(-(len(order) + len(near_miss)) // per_doc))
    relevant_docs = sorted(rng.sample(range(doc_num), len(order)))
    slots = doc_num * per_doc - len(order)
    distractors = near_miss[:slots]
    filler = _outside_facts(names, entities, slots - len(distractors), rng)
    others = distractors + filler
    rng.shuffle(others)  # near misses spread over the whole stream, not only its first documents
    statement_of_doc = dict(zip(relevant_docs, order))
    lines_of_doc = _deal_lines(others, doc_num, per_doc, statement_of_doc, cfg.near_misses_apart, rng)
    seen: dict[tuple[str, str], int] = {}
    states: list[list[str]] = []  # [line, state] for every statement of an asked key
    texts = []
    for k in range(doc_num):
        lines = lines_of_doc[k]
        if k in statement_of_doc:
            e, a = key = statement_of_doc[k]
            fact = [e, a, history[key][seen.get(key, 0)]]
            states.append([f"{' '.join(fact)} .", "revision" if seen.get(key, 0) else "relevant"])
            seen[key] = seen.get(key, 0) + 1
            lines.insert(rng.randrange(len(lines) + 1), fact)
        texts.append("".join(f" {e} {a} {v} ." for e, a, v in lines))
    documents = [Document(title, text) for title, text in zip(_titles(cfg, doc_num, rng), texts)]
    facts = [[e, a, v] for key in asked for e, a in [key] for v in history[key]] + distractors
    return Sample(
        id=sample_id,
        source="synthetic",
        documents=documents,
        questions=[Question(f"{a} of {e} ?", [history[(e, a)][-1]]) for e, a in asked],
        metadata={
            "facts": facts,
            "filler_facts": filler,
            "chains": [{"entity": e, "path": [a], "facts": [[e, a, history[(e, a)][-1]]]} for e, a in asked],
            "entities": entities,
            "attributes": attributes,
            "revisions": {f"{e} {a}": history[(e, a)] for e, a in asked},
            "turn_states": {"markers": states, "default": "distractor"},
        },
    )


def _deal_lines(
    others: list[list[str]], doc_num: int, per_doc: int, statement_of_doc: dict[int, tuple[str, str]], apart: bool,
    rng: random.Random,
) -> list[list[list[str]]]:
    """The non-asked lines of each document, dealt in `others`' order. `apart`: no line goes to a document stating
    an asked key of its attribute; those lines are placed first, each into the allowed document with the most room
    left (ties at random), then the rest fill the remaining room in order, and each document's lines are shuffled."""
    room = [per_doc - (k in statement_of_doc) for k in range(doc_num)]
    if not apart:
        pool = iter(others)
        return [[next(pool) for _ in range(room[k])] for k in range(doc_num)]
    stated = {a for _, a in statement_of_doc.values()}
    dealt: list[list[list[str]]] = [[] for _ in range(doc_num)]
    for line in [line for line in others if line[1] in stated]:
        allowed = [k for k in range(doc_num) if room[k] and statement_of_doc.get(k, ("", ""))[1] != line[1]]
        if not allowed:
            raise ConfigError("data.synth.near_misses_apart: no document can take a near miss apart; raise doc_num")
        most = max(room[k] for k in allowed)
        k = rng.choice([k for k in allowed if room[k] == most])
        dealt[k].append(line)
        room[k] -= 1
    rest = iter([line for line in others if line[1] not in stated])
    for k in range(doc_num):
        dealt[k] += [next(rest) for _ in range(room[k])]
        rng.shuffle(dealt[k])
    return dealt


def generate_synthetic(cfg: SynthConfig, n: int | None = None, seed: int | None = None) -> list[Sample]:
    """`n` (default cfg.num_samples) samples; sample i depends only on (seed, i) and the config."""
    _check(cfg)
    seed = cfg.seed if seed is None else seed
    n = cfg.num_samples if n is None else n
    names = [n for n in name_pool(cfg.name_vocab) if n != cfg.subject]  # the subject is nobody else
    make = _revision_sample if cfg.task == "revisions" else _one_sample
    return [make(cfg, names, random.Random(f"atommem-synth:{seed}:{i}"), f"synth-{seed}-{i}") for i in range(n)]
