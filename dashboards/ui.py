"""What every page shares: the language, the API-down banner, auto-refresh."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import streamlit as st

from . import data
from .client import ApiError, ApiRefused, ApiUnavailable
from .i18n import LANGUAGES, Lang, t
from .views import DISPLAY_TZ

LANG_KEY = "language"  # the session's choice: a plain key, so it outlives any page
SWITCH_KEY = "language_switch"  # the sidebar widget that changes it


def language_switch() -> Lang:
    """The sidebar's 中文 / English switch. A new session starts in ``?lang=`` of its
    URL, else in the configured language; the choice then lives in the session."""
    state = st.session_state
    if LANG_KEY not in state:
        wanted = st.query_params.get("lang")
        state[LANG_KEY] = wanted if wanted in LANGUAGES else data.settings().dashboard_language
    state[SWITCH_KEY] = state[LANG_KEY]
    st.sidebar.radio("中文 / English", list(LANGUAGES), key=SWITCH_KEY,
                     format_func=LANGUAGES.__getitem__, horizontal=True,
                     on_change=_remember_language)
    return state[LANG_KEY]


def _remember_language() -> None:
    st.session_state[LANG_KEY] = st.session_state[SWITCH_KEY]


CHOICES_KEY = "choices"  # what each chooser was last set to, whatever the language


def choice(widget: Callable[..., Any], label: str, options: list[Any], *, name: str,
           language: Lang, default: Any = None, **kwargs: Any) -> Any:
    """A selectbox or radio whose choice survives a language switch.

    Streamlit keeps the label a keyed widget shows for its value when only the
    ``format_func`` changes, so after a switch it would still read in the old language.
    So each language gets its own widget (the key ends in the language), started on
    the choice remembered here (or ``default``)."""
    remembered = st.session_state.setdefault(CHOICES_KEY, {})
    current = remembered.get(name, default)
    index = options.index(current) if current in options else 0
    value = widget(label, options, index=index, key=f"{name}.{language}", **kwargs)
    remembered[name] = value
    return value


def choices(label: str, options: list[Any], *, name: str, language: Lang,
            default: list[Any] | None = None, **kwargs: Any) -> list[Any]:
    """A multiselect that survives a language switch (see ``choice``)."""
    remembered = st.session_state.setdefault(CHOICES_KEY, {})
    current = [v for v in remembered.get(name, default or []) if v in options]
    value = st.multiselect(label, options, default=current, key=f"{name}.{language}",
                           **kwargs)
    remembered[name] = value
    return value


def remember(name: str, value: object) -> None:
    """Make ``value`` the choice of ``name`` (a link or a click chose it)."""
    st.session_state.setdefault(CHOICES_KEY, {})[name] = value


def lang() -> Lang:
    return st.session_state.get(LANG_KEY) or data.settings().dashboard_language


@contextmanager
def guard(language: Lang) -> Iterator[None]:
    """Turns an API failure into a banner that says what to do, and stops the page (or
    the auto-refreshing part of it, which then tries again at its next refresh)."""
    try:
        yield
    except ApiRefused as exc:
        if exc.status == 401:  # the session ended (expired, signed out elsewhere): sign in
            st.session_state.pop(data.TOKEN_KEY, None)
            st.session_state[SIGNED_OUT_KEY] = exc.message
            st.rerun()
        banner(exc, language)
        st.stop()
    except ApiError as exc:
        banner(exc, language)
        st.stop()


SIGNED_OUT_KEY = "signed_out_because"  # why the last session ended, shown at sign-in


def banner(exc: ApiError, language: Lang) -> None:
    if isinstance(exc, ApiUnavailable):
        st.error(t("error.unavailable", language, url=data.settings().api_url,
                   detail=exc.message), icon=":material/cloud_off:")
        st.button(t("error.retry", language), key="retry")
    elif isinstance(exc, ApiRefused):
        st.error(t("error.refused", language, detail=exc.message), icon=":material/lock:")
    else:
        st.error(t("error.request", language, detail=exc.message), icon=":material/error:")


def auto_refresh(body: Callable[[], None]) -> Callable[[], None]:
    """Run ``body`` as a fragment that re-runs itself every ``dashboard_refresh_s``
    seconds (only that part of the page, and the cache TTLs are shorter, so each
    refresh shows new data); 0 turns it off."""
    seconds = data.settings().dashboard_refresh_s

    def run() -> None:
        language = lang()
        body()
        stamp = datetime.now(ZoneInfo(DISPLAY_TZ)).strftime("%H:%M:%S")
        note = (t("app.refresh", language, seconds=seconds) if seconds
                else t("app.refresh_off", language))
        st.caption(f"{t('app.updated', language, time=stamp)} · {note}")

    return st.fragment(run, run_every=seconds) if seconds else run

