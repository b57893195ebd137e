from benchmark.regression import compare

ROW = {"method": "dualreal", "case": "c", "prompt_index": 0, "seed": 42, "clip_t": 0.30, "dynamic_degree": 10.0,
       "clip_i": None}


def test_within_tolerance_passes_and_a_moved_metric_fails_readably():
    assert compare([ROW], [{**ROW, "clip_t": 0.3005, "dynamic_degree": 10.05}]) == []
    diffs = compare([ROW], [{**ROW, "clip_t": 0.31}])
    assert len(diffs) == 1 and "dualreal/c/0/42 clip_t: stored 0.3 → now 0.31" in diffs[0]
    assert compare([ROW], [{**ROW, "dynamic_degree": 10.5}])  # 5 % > 1 % relative
    assert compare([ROW], [{**ROW, "clip_i": 0.5}]) == ["dualreal/c/0/42 clip_i: stored None → now 0.5"]


def test_missing_and_new_videos_are_reported():
    other = {**ROW, "prompt_index": 1}
    assert compare([ROW], [other]) == ["missing now: ('dualreal', 'c', 0, 42)", "new now (not stored): ('dualreal', 'c', 1, 42)"]
