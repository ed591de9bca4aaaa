"""Reference-list labels that match the citations in the text.

The chapters cite by author and year ("Ho et al., 2020", ``bibtex_reference_style: author_year``), so the
references page labels its entries the same way instead of with numbers: ``[Ho et al., 2020]`` for three or
more authors, ``[Ho and Salimans, 2022]`` for two, ``[Efron, 2011]`` for one. Two entries that would get the
same label are told apart by a letter after the year, in the order of the list (2022a, 2022b).

Use it as the bibliography's style: ``:style: author_year`` (the entries are formatted as pybtex's ``plain``).
"""

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle


def surname(person) -> str:
    """The part of a name a citation shows: "van den Oord", "Kynkäänniemi" (LaTeX accents decoded)."""
    return str(Text.from_latex(" ".join(person.prelast_names + person.last_names)))


def author_year_label(entry) -> str:
    """"Ho et al., 2020" from an entry's authors and year."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [surname(p) for p in people]
    if len(names) >= 3:
        who = f"{names[0]} et al."
    elif names:
        who = " and ".join(names)
    else:
        who = entry.fields.get("title", entry.key)
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year_label(entry) for entry in sorted_entries]
        count, seen = Counter(labels), Counter()
        for label in labels:
            if count[label] == 1:
                yield label
            else:
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label]]
                seen[label] += 1


class AuthorYearStyle(PlainStyle):
    default_label_style = "author_year"


def setup(app):
    register_plugin("pybtex.style.labels", "author_year", AuthorYearLabels)
    register_plugin("pybtex.style.formatting", "author_year", AuthorYearStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
