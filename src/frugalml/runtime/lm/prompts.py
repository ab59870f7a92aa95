"""A small built-in prompt set, one slice per kind of task, and held-out prose for perplexity.

The prompts are written for frugalml (no dataset is copied) and stay short, so a quality report on a
small model takes seconds. Two slices are input-grounded: "summarise" condenses a paragraph given in the
prompt, and "extract" answers by quoting from a given passage, where prompt-lookup decoding should
accept the most guesses. The held-out text comes from a package that frugalml already depends on;
nothing is downloaded.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

PROMPTS: dict[str, tuple[str, ...]] = {
    "qa": (
        "What is the capital of Australia?",
        "How many legs does a spider have?",
        "Which planet is closest to the Sun?",
        "What gas do plants take in from the air to make their food?",
        "Who wrote the play Romeo and Juliet?",
    ),
    "summarise": (
        "Summarise the following text in one sentence.\n\n"
        "The town library opened a repair cafe last spring. Every second Saturday, volunteers with tools and "
        "sewing machines sit at long tables and help neighbours fix broken lamps, torn jackets, wobbly chairs "
        "and old radios. Visitors pay nothing, but they are asked to stay and watch so that they can do the "
        "repair themselves next time. In its first six months the cafe fixed more than four hundred items.",
        "Condense this paragraph into two short sentences.\n\n"
        "Mara runs a small bakery that used to burn gas in its two ovens. Last year she replaced them with a "
        "single electric deck oven and put solar panels on the roof. The new oven heats up more slowly, so she "
        "now starts baking thirty minutes earlier, but the bread bakes more evenly and her energy bill fell by "
        "almost a third.",
        "Give a short summary of this passage.\n\n"
        "Migrating birds use several cues to find their way. Many species read the position of the sun during "
        "the day and the pattern of stars at night. Some can sense the Earth's magnetic field, which gives them "
        "a rough compass even under cloud. Near the end of a journey, familiar landmarks such as coastlines, "
        "rivers and mountain ridges take over.",
        "Summarise this email in one sentence.\n\n"
        "Hi team, the quarterly planning meeting has moved from Thursday to Friday at 10 am because the large "
        "meeting room is being repainted. We will use the smaller room on the third floor, so please bring your "
        "own laptop. The agenda is the same: last quarter's results, the hiring plan and the office move. "
        "Send me any extra topics by Wednesday evening. Thanks, Priya",
        "What is the main point of this text? Answer in one sentence.\n\n"
        "A hash table stores values in an array and uses a hash function to turn each key into an index. When "
        "two keys land on the same index, the table keeps a short list at that slot or probes for the next free "
        "one. As long as the table is not too full, looking up a key takes about the same time however many "
        "items are stored, which is why hash tables back dictionaries and caches.",
    ),
    "code": (
        "Write a Python function is_palindrome(s) that returns True if the string reads the same forwards and "
        "backwards, ignoring case.",
        "Complete this Python function:\n\n"
        "def fizzbuzz(n):\n"
        "    \"\"\"Return a list of strings for 1..n: 'Fizz' for multiples of 3, 'Buzz' for multiples of 5,\n"
        "    'FizzBuzz' for multiples of both, otherwise the number itself.\"\"\"\n",
        "Write a Python function that counts how many times each word appears in a string and returns a "
        "dictionary.",
        "Fix the bug in this Python function:\n\n"
        "def average(values):\n"
        "    total = 0\n"
        "    for v in values:\n"
        "        total += v\n"
        "    return total / len(value)\n",
        "Write a Python function flatten(nested) that turns a list of lists into a single list.",
    ),
    "chat": (
        "Can you suggest three fun things to do on a rainy weekend?",
        "I have a job interview tomorrow and I'm nervous. Any advice?",
        "Tell me a short story about a cat who learns to fly.",
        "What could I cook for dinner tonight if I only have eggs, rice and spinach?",
        "Hi! How are you today?",
    ),
    "extract": (
        "Read the passage and answer with the exact words from it.\n\n"
        "Passage: The Harbour Museum is open from Tuesday to Sunday, 9 am to 5 pm. Tickets cost 8 euros for "
        "adults and 4 euros for children under twelve. Guided tours of the old lighthouse start every hour from "
        "the main entrance and last about forty minutes.\n\n"
        "Question: How long does a guided tour of the old lighthouse last?",
        "Passage: To reset the router, hold down the small button on the back panel for ten seconds until the "
        "green light starts blinking. Wait two minutes for the router to restart, then connect to the network "
        "named HomeNet-Setup and open the address 192.168.1.1 in a browser.\n\n"
        "Quote the sentence from the passage that says how to reset the router.",
        "From the text below, copy the list of ingredients exactly as written.\n\n"
        "Text: For the lemon cake you will need 200 grams of flour, 150 grams of sugar, three eggs, the grated "
        "zest of two lemons and 100 grams of melted butter. Mix the dry ingredients first, then add the eggs "
        "and the butter, and bake for 35 minutes at 180 degrees.",
        "Passage: The committee met on 14 March and agreed on three decisions. First, the footbridge over the "
        "canal will be rebuilt in steel rather than wood. Second, the works will begin in June and finish "
        "before the autumn rains. Third, the budget of 2.4 million euros will be shared equally by the city and "
        "the regional government.\n\n"
        "Question: What will the new footbridge be made of, and who will pay for it? Quote the passage.",
        "Extract the name, email address and phone number from this message, each on its own line.\n\n"
        "Message: Hello, my name is Daniel Okafor and I would like to book a table for four people on Friday "
        "evening. You can reach me at daniel.okafor@example.com or call me on 555-0192 if anything changes.",
    ),
}

HELDOUT_SOURCE = "statsmodels.datasets.*.data.DESCRLONG (the long descriptions of statsmodels' bundled datasets)"


def heldout_text() -> str:
    """English prose for perplexity: the long description of every dataset bundled with statsmodels, in
    name order, each paragraph on one line. Installed with statsmodels (a frugalml dependency); the same
    text on every call for a given statsmodels version."""
    import statsmodels.datasets as datasets

    paragraphs = []
    for info in sorted(pkgutil.iter_modules(datasets.__path__), key=lambda m: m.name):
        if not info.ispkg:
            continue
        try:
            module = importlib.import_module(f"statsmodels.datasets.{info.name}.data")
        except ImportError:
            continue
        for block in re.split(r"\n\s*\n", getattr(module, "DESCRLONG", "") or ""):
            line = " ".join(block.split())
            if len(line.split()) >= 5:  # prose, not a lone path or title fragment
                paragraphs.append(line)
    return "\n\n".join(paragraphs)
