"""Text metrics against hand-computed values and the libraries' own documented examples."""

import math

import pytest

from eval.metrics import MetricResult, all_metrics, bertscore, bleu, distinct, f1_tokens, rouge, unigram_f1


def test_identical_replies_score_perfectly():
    replies = ["I keep three beehives at the bottom of the garden.", "The pendulum runs a few seconds fast."]
    result = all_metrics(replies, replies, bertscore=False)
    assert result.summary["bleu"] == pytest.approx(100.0)
    assert result.per_item["bleu_sentence"] == pytest.approx([100.0, 100.0])
    for key in ("rouge1", "rouge2", "rougeL"):
        assert result.summary[key] == 1.0 and result.per_item[key] == [1.0, 1.0]


def test_disjoint_replies_score_zero():
    result = all_metrics(["bees make honey"], ["clocks need winding daily"], bertscore=False)
    assert result.summary["bleu"] == 0.0 and result.per_item["bleu_sentence"] == [0.0]
    assert result.summary["rouge1"] == result.summary["rouge2"] == result.summary["rougeL"] == 0.0


def test_corpus_bleu_by_hand():
    # 13a tokens: hyp "the cat sat on the mat", ref "the cat sat on a mat" (6 tokens each, BP = 1).
    # Matches: 1-grams 5/6, 2-grams 3/5 (the cat, cat sat, sat on), 3-grams 2/4, 4-grams 1/3.
    result = bleu(["the cat sat on the mat"], ["the cat sat on a mat"])
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** (1 / 4)
    assert result.summary["bleu"] == pytest.approx(expected)
    assert result.per_item["bleu_sentence"] == pytest.approx([expected])  # no zero counts: smoothing is idle


def test_sentence_bleu_matches_sacrebleu_documented_example():
    # sacrebleu's test_sentence_bleu.py (issue #98): exp smoothing, effective order, 13a -> 8.493;
    # and (issue #141) no match at all -> 0.0.
    result = bleu(
        ["Producția de zahăr primă va fi exprimată în ceea ce privește zahărul alb;", "this is a cat"],
        ["producţia de zahăr brut se exprimă în zahăr alb;", "okay thanks"],
    )
    assert result.per_item["bleu_sentence"] == pytest.approx([8.493, 0.0], abs=1e-3)
    assert result.summary["bleu_sentence_mean"] == pytest.approx(8.493 / 2, abs=1e-3)
    assert "eff:yes" in result.info["bleu_sentence"] and "smooth:exp" in result.info["bleu_sentence"]
    assert result.info["bleu"].endswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0")


def test_rouge_readme_example_by_hand():
    # rouge-score README: score("The quick brown fox jumps over the lazy dog", "The quick brown dog jumps on the log.").
    # Stemmed tokens: target "the quick brown fox jump over the lazi dog" (9), prediction "the quick brown dog
    # jump on the log" (8). Unigram overlap 6 -> F1 = 2*6/(9+8); bigram overlap 2 of 8 and 7 -> 2*2/15;
    # LCS "the quick brown jump the" = 5 -> 2*5/17.
    result = rouge(["The quick brown dog jumps on the log."], ["The quick brown fox jumps over the lazy dog"])
    assert result.per_item["rouge1"] == pytest.approx([12 / 17])
    assert result.per_item["rouge2"] == pytest.approx([4 / 15])
    assert result.per_item["rougeL"] == pytest.approx([10 / 17])


def test_rouge1_stemming_and_mean_by_hand():
    # "walking dogs" vs "the dog walked": stems walk, dog / the, dog, walk -> overlap 2, P = 2/2, R = 2/3, F = 0.8.
    result = rouge(["walking dogs", "same words"], ["the dog walked", "same words"])
    assert result.per_item["rouge1"] == pytest.approx([0.8, 1.0])
    assert result.summary["rouge1"] == pytest.approx(0.9)


def test_distinct_by_hand():
    # Tokens: [i, like, bees] [I, like, clocks, i, like] -> lowercased unigrams 8,
    # different {i, like, bees, clocks} = 4; bigrams (i like)(like bees) + (i like)(like clocks)(clocks i)(i like)
    # = 6, different 4 (never "bees i": n-grams stay inside a reply).
    result = distinct(["I like bees", "I like clocks i like"])
    assert result.summary["distinct_1"] == pytest.approx(4 / 8)
    assert result.summary["distinct_2"] == pytest.approx(4 / 6)
    assert result.per_item["length"] == [3.0, 5.0] and result.summary["avg_length"] == 4.0


def test_distinct_of_one_word_replies_has_no_bigrams():
    result = distinct(["yes", "yes", ""])
    assert result.summary["distinct_1"] == 0.5 and result.summary["distinct_2"] == 0.0
    assert result.summary["avg_length"] == pytest.approx(2 / 3)


def test_length_mismatch_raises():
    for fn in (bleu, rouge, bertscore, all_metrics):
        with pytest.raises(ValueError, match="2 predictions but 1 references"):
            fn(["a", "b"], ["a"])


def test_empty_input_gives_empty_result():
    empty = MetricResult({}, {}, {})
    assert all_metrics([], []) == empty and bleu([], []) == empty and distinct([]) == empty


def test_all_metrics_merges_per_item_lists_of_input_length():
    result = all_metrics(["hello there", "I build clocks"], ["hi there", "I make clocks"], bertscore=False)
    assert set(result.per_item) == {"bleu_sentence", "rouge1", "rouge2", "rougeL", "f1", "length"}
    assert all(len(values) == 2 for values in result.per_item.values())
    assert {"bleu", "bleu_sentence", "rouge", "distinct"} <= set(result.info)


def test_unigram_f1_by_hand():
    # ConvAI2 normalisation: "The", "a" and punctuation go; "Clocks!" and "clocks" are one token.
    assert f1_tokens("The Clocks! A bee, an owl's nest.") == ["clocks", "bee", "owls", "nest"]
    # reply: i build clocks clocks (4 tokens); reference: i repair clock no clocks (5); in both:
    # i, clocks (once: the multisets' overlap) = 2. Precision 2/4, recall 2/5, F1 = 4/9.
    assert f1_tokens("I repair a clock... no: clocks") == ["i", "repair", "clock", "no", "clocks"]
    result = unigram_f1(["I build the clocks, clocks."], ["I repair a clock... no: clocks"])
    assert result.per_item["f1"] == pytest.approx([4 / 9])
    assert unigram_f1(["the a an"], ["bees"]).per_item["f1"] == [0.0]  # nothing left to match
    assert unigram_f1(["Bees, bees!"], ["bees bees"]).summary["f1"] == 1.0


def test_bertscore_identical_related_unrelated():
    reference = "I keep three beehives and name every queen after a scientist."
    result = bertscore(
        [reference, "I have three hives of bees and each queen is named after a scientist.", "The train was late."],
        [reference] * 3,
    )
    identical, related, unrelated = result.per_item["bertscore_f1"]
    assert identical == pytest.approx(1.0, abs=1e-4)
    assert related > unrelated
    assert result.summary["bertscore_f1"] == pytest.approx((identical + related + unrelated) / 3)
    assert all(math.isfinite(v) for key in ("bertscore_p", "bertscore_r") for v in result.per_item[key])
    info = result.info["bertscore"]
    assert "all-MiniLM-L6-v2" in info and "layer 6" in info and "rescaled: no" in info and "bert-score 0.3" in info
