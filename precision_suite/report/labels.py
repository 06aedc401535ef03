"""Headings and labels of the HTML report in English and Chinese.

The labels are data: `LABELS` maps a language code to a dict with the same keys, and
`COLUMN_LABELS` gives Chinese headers for table columns. English tables keep the CSV column
names as headers so a reader can search the CSV for what the page shows.
"""

from precision_suite.errors import SpecError

LANGUAGES = ("en", "zh")

# The value of the <html lang> attribute for each language.
HTML_LANG = {"en": "en", "zh": "zh-CN"}

LABELS = {
    "en": {
        "title": "RMSNorm precision report",
        "run": "Run",
        "incomplete_banner": "Incomplete run: the page shows the rows written so far.",
        "incomplete_flag": "run.json does not mark the run complete",
        "incomplete_tables": "rows were never written to CSV for these tables",
        "broken_lines": "unreadable JSON lines skipped (cut off when a process stopped)",
        "verdict_passed": "Every executed case is within its ULP budget.",
        "verdict_failed": "Some cases failed or raised errors.",
        "verdict_empty": "No case rows were written.",
        "count_cases": "rows",
        "status_passed": "passed",
        "status_failed": "failed",
        "status_unavailable": "unavailable",
        "status_error": "error",
        "nav": "Contents",
        "section_summary": "Summary per backend and dtype",
        "summary_note": "Maxima over executed cases. margin is the smallest budget minus max ULP error "
                        "of any case; a negative margin means at least one case exceeds its budget.",
        "section_budgets": "ULP budgets",
        "budgets_note": "The budget table of the installed precision_suite, policy",
        "section_unavailable": "Unavailable backends and dtypes",
        "unavailable_none": "Every backend ran every dtype it was asked to run.",
        "section_worst": "Worst cases",
        "worst_note": "Failures and errors first, then the highest ratio of max ULP error to budget.",
        "worst_none": "No executed cases.",
        "worst_element": "Worst element",
        "spec": "Spec",
        "message": "Message",
        "repro": "Reproduce",
        "spec_invalid": "The spec column does not parse, so there is no reproduce command",
        "section_plots": "Plots",
        "plot_ulp_distribution": "Max ULP error per case, by backend and dtype; red ticks mark budgets "
                                 "that do not depend on the hidden size.",
        "plot_ulp_hidden": "Max ULP error against hidden size; dashed lines are the budgets.",
        "plot_eps_scale": "Max ULP error over budget against eps and input scale; 1 is the budget.",
        "plot_bitwise": "Mean fraction of elements bit-identical to the correctly rounded reference. "
                        "Two backends both bit-identical at an element agree with each other there, "
                        "so fractions a and b bound their agreement below by a + b - 1.",
        "plot_e2e_stages": "Error of each end-to-end stage against the float64 reference.",
        "plot_e2e_identical": "Bit-identical fraction of each stage between two modes.",
        "plot_none": "Not enough executed rows to draw this plot.",
        "plot_labels_note": "Plot axes are labelled in English.",
        "section_e2e": "End-to-end decoder layer",
        "e2e_not_run": "Not run: this run directory has no e2e table.",
        "e2e_stages": "Stage table",
        "e2e_routing": "Routing flips",
        "e2e_routing_none": "The e2e table has no routing columns.",
        "norm_sites": "Norm-site coverage",
        "norm_sites_not_run": "Not run: this run directory has no norm_sites table.",
        "section_other_tables": "Other tables",
        "section_comparison": "Comparison with the baseline",
        "comparison_none": "No baseline given; pass --baseline OTHER_RUN_DIR to compare.",
        "baseline": "Baseline",
        "regression_factor": "Regression factor",
        "comparison_regressions": "Regressions found",
        "comparison_clean": "No regressions against the baseline.",
        "new_failures": "New failures",
        "fixed_cases": "Fixed cases",
        "ulp_growth": "ULP error growth",
        "ulp_growth_note": "Flagged when the current value exceeds the factor times the larger of the "
                           "baseline value and the ULP floor, over the cases both runs share.",
        "newly_unavailable": "Newly unavailable backends and dtypes",
        "environment_changes": "Environment differences",
        "case_set_changes": "Cases only in this run / only in the baseline",
        "baseline_incomplete": "The baseline run is incomplete.",
        "none": "None.",
        "section_environment": "Environment",
        "key": "key",
        "value": "value",
        "empty_value": "(not recorded)",
    },
    "zh": {
        "title": "RMSNorm 精度报告",
        "run": "运行",
        "incomplete_banner": "运行未完成：页面只显示已写入的行。",
        "incomplete_flag": "run.json 未标记运行完成",
        "incomplete_tables": "以下表格的行尚未写入 CSV",
        "broken_lines": "跳过的无法解析的 JSON 行（进程中止时被截断）",
        "verdict_passed": "所有已执行的用例都在 ULP 预算之内。",
        "verdict_failed": "部分用例失败或出错。",
        "verdict_empty": "没有写入任何用例行。",
        "count_cases": "行",
        "status_passed": "通过",
        "status_failed": "失败",
        "status_unavailable": "不可用",
        "status_error": "出错",
        "nav": "目录",
        "section_summary": "按后端和数据类型汇总",
        "summary_note": "已执行用例的最大值。余量为各用例预算减去最大 ULP 误差的最小值；余量为负说明至少一个用例超出预算。",
        "section_budgets": "ULP 预算",
        "budgets_note": "已安装的 precision_suite 的预算表，策略版本",
        "section_unavailable": "不可用的后端和数据类型",
        "unavailable_none": "所有后端都运行了要求的全部数据类型。",
        "section_worst": "最差用例",
        "worst_note": "先列失败和出错的用例，再按最大 ULP 误差与预算之比从高到低排列。",
        "worst_none": "没有已执行的用例。",
        "worst_element": "最差元素",
        "spec": "用例规格",
        "message": "消息",
        "repro": "复现命令",
        "spec_invalid": "spec 列无法解析，因此没有复现命令",
        "section_plots": "图表",
        "plot_ulp_distribution": "每个用例的最大 ULP 误差，按后端和数据类型分组；红色刻度为不随隐藏维度变化的预算。",
        "plot_ulp_hidden": "最大 ULP 误差与隐藏维度大小的关系；虚线为预算。",
        "plot_eps_scale": "最大 ULP 误差与预算之比随 eps 和输入尺度的变化；1 即预算。",
        "plot_bitwise": "与正确舍入的参考值逐位相同的元素比例（均值）。两个后端在某元素上都与参考值逐位相同时，"
                        "它们在该元素上彼此一致，因此比例 a 和 b 给出一致性的下界 a + b - 1。",
        "plot_e2e_stages": "端到端各阶段相对 float64 参考值的误差。",
        "plot_e2e_identical": "两种模式之间各阶段逐位相同的比例。",
        "plot_none": "已执行的行不足，无法绘制此图。",
        "plot_labels_note": "图中坐标轴使用英文标注。",
        "section_e2e": "端到端解码层",
        "e2e_not_run": "未运行：此运行目录中没有 e2e 表。",
        "e2e_stages": "阶段表",
        "e2e_routing": "路由翻转",
        "e2e_routing_none": "e2e 表中没有路由相关的列。",
        "norm_sites": "归一化位置覆盖",
        "norm_sites_not_run": "未运行：此运行目录中没有 norm_sites 表。",
        "section_other_tables": "其他表格",
        "section_comparison": "与基线的比较",
        "comparison_none": "未指定基线；使用 --baseline OTHER_RUN_DIR 进行比较。",
        "baseline": "基线",
        "regression_factor": "回归倍数",
        "comparison_regressions": "发现回归",
        "comparison_clean": "与基线相比没有回归。",
        "new_failures": "新增失败",
        "fixed_cases": "已修复的用例",
        "ulp_growth": "ULP 误差增长",
        "ulp_growth_note": "在两次运行共有的用例上，当前值超过倍数乘以基线值与 ULP 下限中较大者时标记。",
        "newly_unavailable": "新出现不可用的后端和数据类型",
        "environment_changes": "环境差异",
        "case_set_changes": "仅在本次运行 / 仅在基线中的用例",
        "baseline_incomplete": "基线运行未完成。",
        "none": "无。",
        "section_environment": "运行环境",
        "key": "项目",
        "value": "值",
        "empty_value": "（未记录）",
    },
}

# Chinese table headers for known columns; other columns keep their CSV names.
COLUMN_LABELS = {
    "zh": {
        "case_id": "用例 ID",
        "seed": "种子",
        "backend": "后端",
        "device": "设备",
        "dtype": "数据类型",
        "shape": "形状",
        "x_dist": "输入分布",
        "x_scale": "输入尺度",
        "w_dist": "权重分布",
        "residual": "残差",
        "status": "状态",
        "cases": "用例数",
        "passed": "通过",
        "failed": "失败",
        "unavailable": "不可用",
        "errors": "出错",
        "max_abs_error": "最大绝对误差",
        "max_rel_error": "最大相对误差",
        "max_ulp_error": "最大 ULP 误差",
        "mean_ulp_error": "平均 ULP 误差",
        "p99_ulp_error": "P99 ULP 误差",
        "ulp_budget": "ULP 预算",
        "margin": "余量",
        "bitwise_equal_frac": "逐位相同比例",
        "message": "消息",
        "reason": "原因",
        "rationale": "依据",
        "metric": "指标",
        "baseline_value": "基线值",
        "current_value": "当前值",
        "ratio": "比值",
        "compared_cases": "比较的用例数",
        "baseline_status": "基线状态",
        "baseline": "基线",
        "current": "当前",
        "stage": "阶段",
        "layer": "层",
        "mode": "模式",
        "site": "位置",
    },
}

# Labels of the environment and run facts, in display order.
ENVIRONMENT_LABELS = {
    "en": {
        "run_id": "run id",
        "profile": "profile",
        "seed": "seed",
        "device": "device",
        "started_at": "started at (UTC)",
        "finished_at": "finished at (UTC)",
        "duration_s": "duration (s)",
        "complete": "complete",
        "paddle_version": "Paddle version",
        "paddle_commit": "Paddle commit",
        "cuda_compiled": "Paddle built with CUDA",
        "cuda_version": "CUDA version",
        "gpu_name": "GPU",
        "python": "Python",
        "numpy": "NumPy",
        "pandas": "pandas",
        "hypothesis": "Hypothesis",
        "ml_dtypes": "ml_dtypes",
        "suite_commit": "precision_suite commit",
        "platform": "platform",
        "machine": "machine",
    },
    "zh": {
        "run_id": "运行 ID",
        "profile": "配置档",
        "seed": "种子",
        "device": "设备",
        "started_at": "开始时间 (UTC)",
        "finished_at": "结束时间 (UTC)",
        "duration_s": "耗时（秒）",
        "complete": "已完成",
        "paddle_version": "Paddle 版本",
        "paddle_commit": "Paddle 提交",
        "cuda_compiled": "Paddle 是否支持 CUDA",
        "cuda_version": "CUDA 版本",
        "gpu_name": "GPU",
        "python": "Python",
        "numpy": "NumPy",
        "pandas": "pandas",
        "hypothesis": "Hypothesis",
        "ml_dtypes": "ml_dtypes",
        "suite_commit": "precision_suite 提交",
        "platform": "平台",
        "machine": "机器架构",
    },
}


def labels_for(lang):
    """Return the label dict of ``lang``.

    Raises
    ------
    SpecError
        When ``lang`` is not one of `LANGUAGES`.
    """
    if lang not in LABELS:
        raise SpecError(f"lang: invalid value {lang!r}; expected one of {', '.join(LANGUAGES)}")
    return LABELS[lang]


def column_label(column, lang):
    """Return the header shown for ``column``: its CSV name in English, a translation in Chinese."""
    return COLUMN_LABELS.get(lang, {}).get(column, column)
