"""Evidently's drift report without its fixed per-column overheads, same output (issue #19).

`lean_report` swaps two things inside Evidently for the duration of a report run:

*Charts.* Each ``ValueDrift`` metric draws its column's widget while the report runs: a "DATA DRIFT"
tab (`plot_agg_line_data`: the window's binned mean ± std against the reference's mean and
band, numerical columns) and a "DATA DISTRIBUTION" tab (`plot_distr_with_perc_button`: both
histograms, counts and percent). Evidently builds both through plotly's object layer
(``make_subplots``, ``go.Bar``/``go.Scatter``, ``update_layout``), whose validation of every
property was about 60 % of ``Report.run`` in a check, a fixed cost per chart, and then
only reads the figure back as data (``figure.to_plotly_json()`` in ``GraphData.figure``).

`distribution_chart` and `drift_line_chart` stand in for those two functions (inside the
metric's module), writing the same ``{"data": [...], "layout": {...}}`` directly:
the same traces with the same properties in plotly's order, each array coerced as plotly's
own validators coerce it, and the layout plotly's ``make_subplots`` gives (template
included, taken from plotly once per process) with the same axis titles and buttons. The
report's widgets, its JSON and its HTML page are unchanged; a call outside the shapes
``ValueDrift`` uses goes to Evidently's own function.

*The drifted-columns count.* ``DriftedColumnsCount`` asks Evidently's legacy
``DatasetDriftMetric``, which runs every column's whole drift computation again (the test
plus histograms, correlations and the binned time plot) and then keeps only four numbers:
columns, drifted columns, their share and the dataset verdict. `drifted_columns` gives it
those four from each column's test alone: the same test chosen the same way, on the same
cleaned values, with the same threshold (a text column or a call for all columns goes to
Evidently's function). Each column's full computation still runs once, in its
``ValueDrift``, which also raises any error the legacy one would.

`tests/unit/test_monitoring_lean.py` compares the whole report run (every metric, test and
widget) with and without `lean_report` on the bundled data and on edge cases.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import numpy as np

_lock = threading.Lock()


class PlainFigure:
    """Stands in for a plotly ``Figure`` where only ``to_plotly_json()`` is read."""

    def __init__(self, data: list[dict[str, Any]], layout: dict[str, Any]) -> None:
        self.data = data
        self.layout = layout

    def to_plotly_json(self) -> dict[str, Any]:
        return {"data": self.data, "layout": self.layout}


@cache
def _base_layout(template_name: str) -> dict[str, Any]:
    """The layout of plotly's one-cell ``make_subplots`` (shared y axes, no titles) under
    the default template ``template_name`` (the cache's key)."""
    from plotly.subplots import make_subplots

    return make_subplots(rows=1, cols=1, shared_yaxes=True, subplot_titles="").to_plotly_json()[
        "layout"
    ]


def shared_template() -> Any:
    """The template dict every plain figure's layout shares (read only)."""
    import plotly.io as pio

    return _base_layout(str(pio.templates.default))["template"]


def _layout(xaxis_name: str, yaxis_name: str) -> dict[str, Any]:
    import plotly.io as pio

    base = _base_layout(str(pio.templates.default))
    layout = {key: copy.deepcopy(value) for key, value in base.items() if key != "template"}
    layout["xaxis"]["title"] = {"text": xaxis_name}
    layout["yaxis"]["title"] = {"text": yaxis_name}
    # the template (most of the layout) is shared by the figures, read only: each widget
    # is turned into plain data (`dump_dict`) and written, never changed
    return {"template": base["template"], **layout}


def _array(value: Any) -> Any:
    """A data array as plotly's ``DataArrayValidator`` stores it."""
    from _plotly_utils.basevalidators import (
        copy_to_readonly_numpy_array,
        is_homogeneous_array,
        to_scalar_or_list,
    )

    if is_homogeneous_array(value):
        return copy_to_readonly_numpy_array(value)
    if _numbers_of_one_type(value):  # what `to_scalar_or_list` gives, in one call
        return np.asarray(value).tolist()
    return to_scalar_or_list(value)


def _numbers_of_one_type(value: Any) -> bool:
    """A flat list of numpy numbers all of one type (the band's coordinates)."""
    if not isinstance(value, list) or not value or not isinstance(value[0], np.generic):
        return False
    kind = type(value[0])
    return value[0].dtype.kind in "iuf" and all(type(v) is kind for v in value)


def _trace(kind: str, **props: Any) -> dict[str, Any]:
    """One trace in cell (1, 1) as plotly's ``to_plotly_json`` gives it: the properties in
    plotly's (alphabetical) order, then its type and axes."""
    trace = {key: props[key] for key in sorted(props) if props[key] is not None}
    for key in ("x", "y"):
        if key in trace:
            trace[key] = _array(trace[key])
    return {**trace, "type": kind, "xaxis": "x", "yaxis": "y"}


def distribution_chart(
    *,
    hist_curr: Any,
    hist_ref: Any = None,
    xaxis_name: str = "",
    yaxis_name: str = "",
    yaxis_name_perc: str = "",
    same_color: bool = False,
    color_options: Any,
    subplots: bool = True,
    to_json: bool = True,
    current_name: str = "current",
    reference_name: str = "reference",
) -> Any:
    """``plot_distr_with_perc_button`` as ``ValueDrift`` calls it (both histograms in one
    cell, a figure back); any other call goes to Evidently's function."""
    from evidently.legacy.utils import visualizations

    if hist_ref is None or subplots or to_json or same_color:
        return visualizations.plot_distr_with_perc_button(
            hist_curr=hist_curr,
            hist_ref=hist_ref,
            xaxis_name=xaxis_name,
            yaxis_name=yaxis_name,
            yaxis_name_perc=yaxis_name_perc,
            same_color=same_color,
            color_options=color_options,
            subplots=subplots,
            to_json=to_json,
            current_name=current_name,
            reference_name=reference_name,
        )
    data: list[dict[str, Any]] = []
    sides = (
        (hist_curr, color_options.get_current_data_color(), current_name),
        (hist_ref, color_options.get_reference_data_color(), reference_name),
    )
    for hist, color, name in sides:  # as `add_traces_with_perc`: counts, then percent
        percent = (hist.count / hist.count.sum()) * 100
        for y, visible in ((hist.count, True), (percent, False)):
            data.append(
                _trace("bar", marker={"color": color}, name=name, visible=visible, x=hist.x, y=y)
            )
    layout = _layout(xaxis_name, yaxis_name)
    visible = [True, False, True, False]
    layout["updatemenus"] = [
        {
            "buttons": [
                {
                    "args": [{"visible": visible}, {"yaxis": {"title": yaxis_name}}],
                    "label": "abs",
                    "method": "update",
                },
                {
                    "args": [
                        {"visible": [not v for v in visible]},
                        {"yaxis": {"title": yaxis_name_perc}},
                    ],
                    "label": "perc",
                    "method": "update",
                },
            ],
            "direction": "right",
            "type": "buttons",
            "x": 1.05,
            "y": 1.2,
            "yanchor": "top",
        }
    ]
    return PlainFigure(data, layout)


def drift_line_chart(
    curr_data: dict[str, Any],
    ref_data: dict[str, Any] | None,
    line: float | None,
    std: float | None,
    xaxis_name: str,
    xaxis_name_ref: str | None,
    yaxis_name: str,
    color_options: Any,
    return_json: bool = True,
    line_name: str | None = None,
) -> Any:
    """``plot_agg_line_data`` as ``ValueDrift`` calls it (the window's binned mean and
    band against the reference's, one cell, a figure back); any other call goes to
    Evidently's function."""
    from evidently.legacy.utils import visualizations

    if ref_data is not None or return_json or len(curr_data) != 1:
        return visualizations.plot_agg_line_data(
            curr_data,
            ref_data,
            line,
            std,
            xaxis_name,
            xaxis_name_ref,
            yaxis_name,
            color_options,
            return_json=return_json,
            line_name=line_name,
        )
    ((name, frame),) = curr_data.items()
    per = frame["per"]
    data: list[dict[str, Any]] = []
    if line is not None:  # as `collect_traces`
        data.append(
            _trace(
                "scatter",
                x=per,
                y=[line] * len(per),
                mode="lines",
                marker={"color": color_options.zero_line_color},
                name=line_name,
                showlegend=line_name is not None,
            )
        )
        if std is not None:  # as `rect_trace`
            low, high = per.min(), per.max()
            data.append(
                _trace(
                    "scatter",
                    x=[low, high, high, low],
                    y=[line + std, line + std, line - std, line - std],
                    fill="toself",
                    fillcolor=color_options.fill_color,
                    opacity=0.5,
                    name="reference (+/- 1std)",
                    line={"color": color_options.fill_color, "dash": "solid", "width": 0},
                    marker={"size": 0},
                )
            )
    color = color_options.get_current_data_color()
    std_filled = frame["std"].fillna(0)
    data.append(  # as `get_traces`: the band, then the mean
        _trace(
            "scatter",
            x=list(per) + list(per[::-1]),
            y=list(frame["mean"] + std_filled) + list(frame["mean"] - std_filled)[::-1],
            fill="toself",
            fillcolor=color,
            opacity=0.2,
            line={"color": color},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    data.append(
        _trace(
            "scatter",
            x=per,
            y=frame["mean"],
            line={"color": color},
            mode="lines",
            name=name,
            legendgroup=name,
            showlegend=True,
        )
    )
    return PlainFigure(data, _layout(xaxis_name, yaxis_name))


class DriftCount:
    """The four figures ``DatasetDriftMetric`` reads of ``get_drift_for_columns``."""

    def __init__(self, columns: int, drifted: int, drift_share: float) -> None:
        self.number_of_columns = columns
        self.number_of_drifted_columns = drifted
        self.share_of_drifted_columns = drifted / columns
        self.dataset_drift = bool(self.share_of_drifted_columns >= drift_share)


def _column_drifted(
    current: Any, reference: Any, column_name: str, column_type: Any, options: Any, columns: Any
) -> bool:
    """Whether ``get_one_column_drift`` would find the column drifted: its test choice,
    cleaning, checks and threshold, without what it draws."""
    import numpy as np
    import pandas as pd
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    if column_name not in current:
        raise ValueError(f"Cannot find column '{column_name}' in current dataset")
    if column_name not in reference:
        raise ValueError(f"Cannot find column '{column_name}' in reference dataset")
    stattest = None
    target = columns.utility_columns.target
    if column_name == target and column_type == ColumnType.Numerical:
        stattest = options.num_target_stattest_func
    elif column_name == target and column_type == ColumnType.Categorical:
        stattest = options.cat_target_stattest_func
    if not stattest:
        stattest = options.get_feature_stattest_func(column_name, column_type.value)
    threshold = options.get_threshold(column_name, column_type.value)
    reference_column = reference[column_name].replace([-np.inf, np.inf], np.nan).dropna()
    if reference_column.empty:
        raise ValueError(
            f"An empty column '{column_name}' was provided for drift calculation in the "
            "reference dataset."
        )
    current_column = current[column_name].replace([-np.inf, np.inf], np.nan).dropna()
    if current_column.empty:
        raise ValueError(
            f"An empty column '{column_name}' was provided for drift calculation in the "
            "current dataset."
        )
    if column_type == ColumnType.Numerical:
        for column, side in ((reference_column, "reference"), (current_column, "current")):
            if not pd.api.types.is_numeric_dtype(column):
                raise ValueError(
                    f"Column '{column_name}' in {side} dataset should contain numerical "
                    "values only."
                )
    test = get_stattest(reference_column, current_column, column_type, stattest)
    return bool(test(reference_column, current_column, column_type, threshold).drifted)


def drifted_columns(
    *,
    current_data: Any,
    reference_data: Any,
    dataset_columns: Any,
    data_drift_options: Any,
    drift_share_threshold: float | None = None,
    columns: list[str] | None = None,
    agg_data: bool,
) -> Any:
    """``get_drift_for_columns`` as ``DatasetDriftMetric`` reads it (the count and share
    of drifted columns and the verdict); for all columns, or with a text column, Evidently's
    own function."""
    import pandas as pd
    from evidently.legacy.calculations import data_drift
    from evidently.legacy.core import ColumnType
    from evidently.legacy.utils.data_operations import recognize_column_type_

    def evidentlys() -> Any:
        return data_drift.get_drift_for_columns(
            current_data=current_data,
            reference_data=reference_data,
            dataset_columns=dataset_columns,
            data_drift_options=data_drift_options,
            drift_share_threshold=drift_share_threshold,
            columns=columns,
            agg_data=agg_data,
        )

    if not columns:
        return evidentlys()
    dataset = pd.concat([reference_data, current_data])
    types = {c: recognize_column_type_(dataset, c, dataset_columns) for c in columns}
    if any(t not in (ColumnType.Numerical, ColumnType.Categorical) for t in types.values()):
        return evidentlys()
    share = (
        drift_share_threshold
        if drift_share_threshold is not None
        else data_drift_options.drift_share
    )
    drifted = sum(
        _column_drifted(
            current_data, reference_data, c, types[c], data_drift_options, dataset_columns
        )
        for c in columns
    )
    return DriftCount(len(columns), drifted, share)


@contextmanager
def lean_report() -> Iterator[None]:
    """Within the block, ``ValueDrift`` draws its charts with `distribution_chart` and
    `drift_line_chart`, and ``DatasetDriftMetric`` counts with `drifted_columns` (one
    block at a time per process: the swaps are module-wide)."""
    from evidently.legacy.metrics.data_drift import dataset_drift_metric as legacy
    from evidently.metrics import column_statistics as module

    with _lock:
        saved = (
            module.plot_distr_with_perc_button,
            module.plot_agg_line_data,
            legacy.get_drift_for_columns,
        )
        module.plot_distr_with_perc_button = distribution_chart  # type: ignore[assignment]
        module.plot_agg_line_data = drift_line_chart  # type: ignore[assignment]
        legacy.get_drift_for_columns = drifted_columns  # type: ignore[assignment]
        try:
            yield
        finally:
            (
                module.plot_distr_with_perc_button,
                module.plot_agg_line_data,
                legacy.get_drift_for_columns,
            ) = saved


_TEMPLATE_MARK = "driftloop:shared-template"


def dump_run(run: Any) -> dict[str, Any]:
    """``run.dump_dict()``, with the plain figures' shared template set aside while pydantic
    copies the widgets and put back after: the same dict, without walking the template
    (most of a chart's layout) once per chart."""
    template = shared_template()
    swapped: list[dict[str, Any]] = []

    def aside(widget: Any) -> None:
        params = getattr(widget, "params", None)
        layout = params.get("layout") if isinstance(params, dict) else None
        if isinstance(layout, dict) and layout.get("template") is template:
            layout["template"] = _TEMPLATE_MARK
            swapped.append(layout)
        for child in [*widget.widgets, *(tab.widget for tab in widget.tabs)]:
            aside(child)
        for graph in widget.additionalGraphs:
            if hasattr(graph, "widgets"):  # a widget; other graphs hold no plain figure
                aside(graph)

    try:
        for widget in [*run._widgets, *run._tests_widgets]:
            aside(widget)
        for result in run._metrics.values():
            for widget in result.get_widgets():
                aside(widget)
        dumped: dict[str, Any] = run.dump_dict()
    finally:
        for layout in swapped:
            layout["template"] = template
    if swapped:
        _put_back(dumped, template)
    return dumped


def _put_back(data: Any, template: Any) -> None:
    """Every set-aside template in the dumped data, back in place."""
    if isinstance(data, dict):
        for key, value in data.items():
            if key == "template" and value == _TEMPLATE_MARK:
                data[key] = template
            elif isinstance(value, dict | list):
                _put_back(value, template)
    elif isinstance(data, list):
        for value in data:
            if isinstance(value, dict | list):
                _put_back(value, template)
