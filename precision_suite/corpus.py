"""The regression corpus: explicit case specs kept as JSON files in ``cases/regressions/``.

Each file is one JSON object ``{"note": "<what it guards>", "spec": {<case spec>}}``. Files
are only ever parsed as JSON. A corrupt file is reported with its path and field and does
not stop the other cases from running.
"""

import dataclasses
import json
import os

from precision_suite.errors import SpecError
from precision_suite.results import write_text_atomic
from precision_suite.spec import CaseSpec

DEFAULT_CORPUS_DIR = os.path.join("cases", "regressions")
# The checkout that an editable install (pip install -e .) runs from.
_CHECKOUT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def default_corpus_dir():
    """Return the corpus folder that commands use when none is given.

    That is `DEFAULT_CORPUS_DIR` under the current folder when it exists. Otherwise it is
    the one in the checkout the package was installed from, so commands started in another
    folder still replay the corpus. With neither, it is the path under the current folder,
    which loads as an empty corpus.
    """
    if os.path.isdir(DEFAULT_CORPUS_DIR):
        return DEFAULT_CORPUS_DIR
    in_checkout = os.path.join(_CHECKOUT_DIR, DEFAULT_CORPUS_DIR)
    if os.path.isdir(in_checkout):
        return in_checkout
    return DEFAULT_CORPUS_DIR


@dataclasses.dataclass(frozen=True)
class CorpusCase:
    """A spec from the corpus with its note and file."""

    spec: CaseSpec
    note: str
    path: str


@dataclasses.dataclass(frozen=True)
class CorpusError:
    """A corpus file that could not be loaded, with the reason naming the field."""

    path: str
    message: str

    def __str__(self):
        return f"{self.path}: {self.message}"


def load_case_file(path):
    """Load one corpus file.

    Raises
    ------
    SpecError
        With the file path and the invalid field in the message.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, UnicodeDecodeError) as error:
        raise SpecError(f"{path}: cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise SpecError(f"{path}: invalid JSON ({error}); a corpus file is one JSON object "
                        '{"note": ..., "spec": {...}}') from None

    if not isinstance(data, dict) or "spec" not in data:
        raise SpecError(f'{path}: spec: missing field; a corpus file is one JSON object {{"note": ..., "spec": {{...}}}}')
    note = data.get("note", "")
    if not isinstance(note, str):
        raise SpecError(f"{path}: note: invalid value {note!r}; expected a string")
    try:
        spec = CaseSpec.from_dict(data["spec"])
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None
    return CorpusCase(spec=spec, note=note, path=path)


def load_corpus(directory=DEFAULT_CORPUS_DIR):
    """Load every ``*.json`` file in ``directory``, sorted by name.

    Returns
    -------
    tuple of (list of CorpusCase, list of CorpusError)
        The loaded cases, and one error per file that failed. A missing directory is an
        empty corpus.
    """
    cases, errors = [], []
    if not os.path.isdir(directory):
        return cases, errors
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        path = os.path.join(directory, name)
        try:
            cases.append(load_case_file(path))
        except SpecError as error:
            errors.append(CorpusError(path=path, message=str(error).removeprefix(f"{path}: ")))
    return cases, errors


def save_case(spec, note, directory=DEFAULT_CORPUS_DIR):
    """Write a spec to ``<directory>/<case_id>.json`` atomically and return the path.

    Raises
    ------
    SpecError
        When the note is empty, because every corpus case states what it guards.
    """
    if not note or not note.strip():
        raise SpecError("note: missing; say in one line what the case guards, with --note TEXT")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{spec.case_id}.json")
    text = json.dumps({"note": note.strip(), "spec": spec.to_dict()}, indent=2, sort_keys=True) + "\n"
    write_text_atomic(path, text)
    return path
