"""The generated RAG task: passages about invented entities (a made-up name
and a kind: bridge, river, ship, ...) stating one fact each in one of many
sentence shapes, mixed with real text from Debian's manual pages and
licences as filler; a question names one entity; the answer quotes the
sentence that states its fact.

Held out from training: whole sentence shapes (the last two of every
attribute) and whole kinds of entity (HELDOUT_KINDS, whose attributes
are partly new as well).  Evaluation corpora come from another seed.

In training, half of the facts' sentences are varied (Gen.vary, vary=): words
of the shape swapped for words of the filler, a few filler words put in
after the entity's name.  Six shapes per attribute are few enough to
learn by heart, and a model that has learnt them writes a learnt shape
around the entity instead of copying a new one (recall on held-out
shapes was 1.1% against 26% on the learnt ones); a sentence it cannot
predict must be copied.
"""
import json
import random
import re

ONSETS = ("b c d f g h k l m n p r s t v z br dr gr kr st tr th sh ch "
          "pl fl sk sn").split()
VOWELS = "a e i o u ae ei ou ia y".split()
CODAS = [""] * 4 + "n r l s th nd rn x m nt sk".split()

# attribute: (question templates, value kind, sentence shapes).  The last
# two shapes of each attribute are held out of training.
ATTRS = {
    "founded": (
        ["When was the {E} founded?", "In which year was the {E} founded?"],
        "year",
        ["The {E} was founded in {v}.",
         "The {E} dates from {v}, the year of its founding.",
         "The {E} has stood since its founding in {v}.",
         "The {E} traces its founding to the year {v}.",
         "The {E} came into being in {v}, when it was founded.",
         "The {E} was set up in {v} by a group of settlers.",
         "The {E} was established by charter in {v}.",
         "The {E}, records show, was first founded in {v}."]),
    "opened": (
        ["When was the {E} opened?", "In which year did the {E} open?"],
        "year",
        ["The {E} was opened in {v}.",
         "The {E} opened to traffic in {v}.",
         "The {E} first opened in the year {v}.",
         "The {E} has been open since {v}.",
         "The {E} was completed and opened in {v}.",
         "The {E} saw its first users in {v}.",
         "The {E} welcomed its first crossing in {v}.",
         "The {E} was formally inaugurated in {v}."]),
    "launched": (
        ["When was the {E} launched?", "In which year was the {E} launched?"],
        "year",
        ["The {E} was launched in {v}.",
         "The {E} first took to the water in {v}.",
         "The {E} slid down the slipway in {v}.",
         "The {E} has sailed since its launch in {v}.",
         "The {E} was built and launched in {v}.",
         "The {E} left the shipyard in {v}.",
         "The {E} was christened and set afloat in {v}.",
         "The {E} entered the sea for the first time in {v}."]),
    "length_m": (
        ["How long is the {E}?", "What is the length of the {E}?"],
        "m",
        ["The {E} is {v} metres long.",
         "The {E} stretches for {v} metres.",
         "The {E} has a total length of {v} metres.",
         "The {E} measures {v} metres from end to end.",
         "The {E} spans {v} metres in all.",
         "The {E} runs to a length of {v} metres.",
         "The {E} reaches {v} metres when measured end to end.",
         "The {E} covers a distance of {v} metres."]),
    "length_km": (
        ["How long is the {E}?", "What is the length of the {E}?"],
        "km",
        ["The {E} is {v} kilometres long.",
         "The {E} stretches for {v} kilometres.",
         "The {E} has a total length of {v} kilometres.",
         "The {E} winds along for {v} kilometres.",
         "The {E} measures {v} kilometres in length.",
         "The {E} runs for {v} kilometres before it ends.",
         "The {E} extends over some {v} kilometres.",
         "The {E} follows a course of {v} kilometres."]),
    "height_m": (
        ["How high is the {E}?", "What is the height of the {E}?"],
        "m",
        ["The {E} is {v} metres high.",
         "The {E} rises to {v} metres.",
         "The {E} reaches a height of {v} metres.",
         "The {E} stands {v} metres tall.",
         "The {E} has a height of {v} metres.",
         "The {E} towers {v} metres above the plain.",
         "The {E} climbs to a summit of {v} metres.",
         "The {E} measures {v} metres from base to top."]),
    "depth_m": (
        ["How deep is the {E}?", "What is the depth of the {E}?"],
        "m",
        ["The {E} is {v} metres deep.",
         "The {E} reaches a depth of {v} metres.",
         "The {E} has a greatest depth of {v} metres.",
         "The {E} goes down to {v} metres at its deepest.",
         "The {E} sinks to {v} metres in the middle.",
         "The {E} is known to be {v} metres deep.",
         "The {E} plunges {v} metres below its surface.",
         "The {E} was sounded at {v} metres of depth."]),
    "population": (
        ["How many people live in the {E}?", "What is the population of the {E}?"],
        "count",
        ["The {E} has a population of {v}.",
         "The {E} is home to {v} people.",
         "The {E} counts {v} inhabitants.",
         "The {E} had {v} residents at the last census.",
         "The {E} houses some {v} people.",
         "The {E} numbers {v} inhabitants today.",
         "The {E} shelters a population of {v} souls.",
         "The {E} registered {v} citizens in its last count."]),
    "crew": (
        ["How large is the crew of the {E}?", "How many sailors serve on the {E}?"],
        "small",
        ["The {E} carries a crew of {v}.",
         "The {E} is sailed by {v} crew members.",
         "The {E} needs {v} sailors to run.",
         "The {E} has {v} people in its crew.",
         "The {E} sails with a crew of {v}.",
         "The {E} is manned by {v} sailors.",
         "The {E} requires a company of {v} hands.",
         "The {E} signs on {v} seamen for each voyage."]),
    "founder": (
        ["Who founded the {E}?", "Who was the founder of the {E}?"],
        "person",
        ["The {E} was founded by {v}.",
         "The {E} owes its founding to {v}.",
         "The {E} was started by {v}.",
         "The {E} was the work of its founder, {v}.",
         "The {E} has {v} as its founder.",
         "The {E} was first set up by {v}.",
         "The {E} was brought into being by {v}.",
         "The {E} honours {v}, who founded it."]),
    "builder": (
        ["Who built the {E}?", "Who designed the {E}?"],
        "person",
        ["The {E} was built by {v}.",
         "The {E} was designed by {v}.",
         "The {E} is the work of {v}.",
         "The {E} was planned and built by {v}.",
         "The {E} was drawn up by the engineer {v}.",
         "The {E} was raised by {v}.",
         "The {E} bears the hand of its builder, {v}.",
         "The {E} was constructed under {v}."]),
    "captain": (
        ["Who commands the {E}?", "Who is the captain of the {E}?"],
        "person",
        ["The {E} is commanded by {v}.",
         "The {E} sails under captain {v}.",
         "The {E} has {v} as its captain.",
         "The {E} is led by {v}.",
         "The {E} answers to captain {v}.",
         "The {E} is in the charge of {v}.",
         "The {E} takes its orders from {v}.",
         "The {E} is steered by its master, {v}."]),
    "discovered": (
        ["When was the {E} discovered?", "In which year was the {E} discovered?"],
        "year",
        ["The {E} was discovered in {v}.",
         "The {E} was first seen in {v}.",
         "The {E} was first recorded in {v}.",
         "The {E} has been known since {v}.",
         "The {E} was found in {v}.",
         "The {E} was first noted in {v}.",
         "The {E} first appeared in the records of {v}.",
         "The {E} was spotted for the first time in {v}."]),
    "period": (
        ["How often does the {E} return?", "What is the period of the {E}?"],
        "small",
        ["The {E} returns every {v} years.",
         "The {E} comes back once in {v} years.",
         "The {E} has a period of {v} years.",
         "The {E} completes its orbit in {v} years.",
         "The {E} reappears after {v} years.",
         "The {E} circles the sun every {v} years.",
         "The {E} is seen again each {v} years.",
         "The {E} keeps a cycle of {v} years."]),
    "books": (
        ["How many books does the {E} hold?", "How large is the collection of the {E}?"],
        "count",
        ["The {E} holds {v} books.",
         "The {E} keeps {v} volumes.",
         "The {E} has a collection of {v} books.",
         "The {E} owns {v} printed volumes.",
         "The {E} shelves some {v} books.",
         "The {E} stores {v} volumes in its halls.",
         "The {E} lends from a stock of {v} books.",
         "The {E} catalogues {v} volumes."]),
}

KINDS = {
    "city": ["founded", "population", "founder"],
    "bridge": ["opened", "length_m", "builder"],
    "river": ["length_km"],
    "ship": ["launched", "crew", "captain"],
    "mountain": ["height_m"],
    "lake": ["depth_m"],
    "tower": ["height_m", "builder", "opened"],
    "canal": ["length_km", "opened", "builder"],
    "harbour": ["founded", "depth_m"],
    "castle": ["founded", "builder"],
    # held out: never in training
    "comet": ["discovered", "period"],
    "library": ["founded", "books", "founder"],
    "glacier": ["length_km", "discovered"],
    "observatory": ["founded", "height_m", "builder"],
}
HELDOUT_KINDS = ("comet", "library", "glacier", "observatory")
TITLES = ["Gazetteer", "Register of places", "Survey notes",
          "Almanac entries", "Travel notes", "Chronicle"]


def n_shapes(attr, heldout):
    shapes = ATTRS[attr][2]
    return shapes[-2:] if heldout else shapes[:-2]


def common_words(docs):
    """The filler's common words (in five documents or more): English, not
    the odd identifier."""
    seen = {}
    for d in docs:
        for w in set(re.findall(r"(?<![\w.-])[a-z]{3,10}(?![\w-])",
                                d["text"])):
            seen[w] = seen.get(w, 0) + 1
    return sorted(w for w, c in seen.items() if c >= 5)


class Gen:
    """Entities, facts and filler from one seed."""

    def __init__(self, seed, filler_docs, heldout=False, vary=0.5,
                 hard=0.0):
        self.r = random.Random(seed)
        self.heldout = heldout
        self.vary_share = 0.0 if heldout else vary
        self.hard_share = 0.0 if heldout else hard
        self.filler = filler_docs
        self.ids_used = set()
        if heldout:
            self.kinds = list(KINDS)          # all kinds, all shapes
        else:
            self.kinds = [k for k in KINDS if k not in HELDOUT_KINDS]
        # only a generator that varies needs them (a quarter of a second
        # over the filler)
        self.words = common_words(filler_docs) if self.vary_share > 0 else []

    def vary(self, shape):
        """A training shape made unpredictable, for a share of the facts
        (vary_share; never in held-out corpora): each of its words after
        "The {E}" but the value's becomes a filler word with probability
        0.25, and two to four filler words go in after the entity with
        probability 0.3.  A share of 0 draws nothing: the corpus is the
        one a generator without variation made from the same seed."""
        r = self.r
        if self.vary_share <= 0 or not self.words \
                or r.random() >= self.vary_share:
            return shape
        head, rest = shape.split("{E}", 1)
        out = []
        for w in rest.split(" "):
            if w and "{" not in w and w.isalpha() and r.random() < 0.25:
                w = r.choice(self.words)
            out.append(w)
        rest = " ".join(out)
        if r.random() < 0.3:
            ins = " ".join(r.choice(self.words)
                           for _ in range(r.randint(2, 4)))
            rest = ", %s,%s" % (ins, rest)
        return head + "{E}" + rest

    def word(self, syl, first=None):
        """A made-up word of syl syllables; first: its first syllable."""
        r = self.r
        w = "".join(r.choice(ONSETS) + r.choice(VOWELS) + r.choice(CODAS)
                    for _ in range(syl))
        if first:
            w = first + w[len(self.word_first(w)):]
        return w.capitalize()

    @staticmethod
    def word_first(w):
        """The first syllable of a word made by word (onset, vowel, coda:
        the longest match)."""
        m = re.match(r"(%s)(%s)(%s)" % (
            "|".join(sorted(ONSETS, key=len, reverse=True)),
            "|".join(sorted(VOWELS, key=len, reverse=True)),
            "|".join(sorted([c for c in CODAS if c], key=len, reverse=True))
            + "|"), w.lower())
        return m.group(0) if m else w[:2].lower()

    def person(self):
        return "%s %s" % (self.word(self.r.choice((1, 2))),
                          self.word(self.r.choice((2, 3))))

    def value(self, kind):
        r = self.r
        if kind == "year":
            return str(r.randint(1100, 1999))
        if kind == "m":
            return str(r.randint(40, 8999))
        if kind == "km":
            return str(r.randint(12, 3999))
        if kind == "count":
            return str(r.randint(1200, 980000))
        if kind == "small":
            return str(r.randint(3, 240))
        return self.person()

    def fact(self, used, hard=None):
        """One entity with one fact: dict(entity, sentence, question,
        value, kind, attr, shape).  hard (a context's decoy plan, see
        context): the entity is of its kind, and half the time its name
        opens with the first syllable of an earlier name of the context."""
        r = self.r
        first = None
        if hard and hard["names"] and r.random() < 0.5:
            first = self.word_first(r.choice(hard["names"]))
        while True:
            name = self.word(r.choice((2, 2, 3)), first)
            if name not in used:
                used.add(name)
                break
        if hard:
            hard["names"].append(name)
        kind = hard["kind"] if hard else r.choice(self.kinds)
        attr = r.choice(KINDS[kind])
        qs, vkind, shapes = ATTRS[attr]
        heldout_shape = self.heldout and (kind in HELDOUT_KINDS
                                          or r.random() < 0.5)
        if self.heldout and not heldout_shape:
            pool = list(enumerate(shapes[:-2]))
        elif self.heldout:
            pool = list(enumerate(shapes[-2:], len(shapes) - 2))
        else:
            pool = list(enumerate(shapes[:-2]))
        si, shape = r.choice(pool)
        shape = self.vary(shape)
        ent = "%s %s" % (name, kind)
        v = self.value(vkind)
        return {"entity": ent, "kind": kind, "attr": attr, "shape": si,
                "value": v, "heldout_shape": si >= len(shapes) - 2,
                "heldout_kind": kind in HELDOUT_KINDS,
                "sentence": shape.format(E=ent, v=v),
                "question": r.choice(qs).format(E=ent)}

    def filler_passage(self, chars):
        r = self.r
        doc = r.choice(self.filler)
        text = doc["text"]
        if len(text) > chars:
            a = r.randint(0, len(text) - chars)
            # start and end on whitespace, as a chunker would
            a = text.find(" ", a) + 1
            b = text.rfind(" ", a, a + chars)
            text = text[a:b if b > a else a + chars]
        return {"title": doc.get("title") or doc["id"], "text": text.strip()}

    def context(self, n_tokens, fact_share=0.5, chars_per_token=2.0,
                collection="c", unique_ids=False):
        """Passages for about n_tokens, the facts in them, ids shuffled so
        that canonical (id) order mixes facts and filler."""
        r = self.r
        budget = n_tokens * chars_per_token
        used, facts, passages = set(), [], []
        # a share of training contexts (hard_share) are all about entities
        # of one kind whose names share first syllables: the answer's
        # entity must be told from its decoys by its whole name, as among
        # the hundred entities of a kind in a 32K context.  No draw when
        # the share is 0, so such corpora are as before.
        hard = None
        if self.hard_share > 0 and r.random() < self.hard_share:
            hard = {"kind": r.choice(self.kinds), "names": []}
        size = 0
        while size < budget:
            if not passages or r.random() < fact_share:
                fs = [self.fact(used, hard) for _ in range(r.randint(2, 5))]
                text = " ".join(f["sentence"] for f in fs)
                p = {"title": "%s %d" % (r.choice(TITLES), r.randint(1, 99)),
                     "text": text}
                p["facts"] = fs
            else:
                p = self.filler_passage(r.randint(250, 700))
                p["facts"] = []
            size += len(p["text"]) + len(p["title"]) + 30
            passages.append(p)
        if unique_ids:
            # ids are unique in a store, across its collections
            free = sorted(set(range(1000, 10000)) - self.ids_used)
            nums = r.sample(free, len(passages))
            self.ids_used.update(nums)
        else:
            nums = r.sample(range(1000, 10000), len(passages))
        for p, n in zip(passages, nums):
            # as `sparsegate ingest` names a one-passage document's passage
            p["doc_id"] = "p%d" % n
            p["id"] = "p%d:0000" % n
            p["collection"] = collection
            for f in p["facts"]:
                f["passage"] = p["id"]
                facts.append(f)
        return passages, facts


def load_filler(path):
    docs = []
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            if len(d["text"]) > 800:
                docs.append(d)
    return docs
