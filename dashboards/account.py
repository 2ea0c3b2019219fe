"""Signing in and out of the dashboards, and the forced password change.

The forms talk to the API (``/auth/...``) like every page; what they keep is the session
token in ``st.session_state`` (``data.TOKEN_KEY``). A reload of the browser tab starts a
new Streamlit session, which asks to sign in again: the token never goes to the browser.

Single sign-on: the sign-in page links to the API's ``/auth/oidc/<provider>/login``
with this dashboard as ``return_to``; the API sends the browser back here with
``?sign_in=<one-time code>``, which is traded for a session (``/auth/oidc/redeem``).
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

from . import data
from .client import ApiError, ApiRefused
from .i18n import Lang, t
from .ui import SIGNED_OUT_KEY, banner

HANDOFF_PARAM = "sign_in"


def dashboard_url() -> str:
    config = data.settings()
    return (config.dashboard_public_url
            or f"http://{config.dashboard_host}:{config.dashboard_port}").rstrip("/")


def sign_in_page(lang: Lang) -> None:
    """The sign-in form (and single sign-on links); on success the page reruns signed in,
    on the page the browser asked for."""
    handoff = st.query_params.get(HANDOFF_PARAM)
    if handoff:
        del st.query_params[HANDOFF_PARAM]
        try:
            data.sign_in(data.anonymous().redeem(handoff))
        except ApiError as exc:
            st.error(t("auth.failed", lang, detail=exc.message))
        else:
            st.rerun()
    st.title(t("auth.title", lang))
    if ended := st.session_state.get(SIGNED_OUT_KEY):  # until the next sign-in
        st.info(t("auth.ended", lang, detail=ended))
    with st.form("sign_in"):
        username = st.text_input(t("auth.username", lang), key="sign_in_username")
        password = st.text_input(t("auth.password", lang), type="password",
                                 key="sign_in_password")
        code = st.text_input(t("auth.code", lang), max_chars=6, key="sign_in_code")
        submitted = st.form_submit_button(t("auth.submit", lang), type="primary")
    if submitted:
        try:
            answer = data.anonymous().sign_in(username.strip(), password,
                                              code.strip() or None)
        except ApiRefused as exc:
            st.error(t("auth.failed", lang, detail=exc.message))
        except ApiError as exc:
            banner(exc, lang)
        else:
            data.sign_in(answer)
            st.rerun()
    _single_sign_on(lang)


def _single_sign_on(lang: Lang) -> None:
    try:
        providers = data.anonymous().identity_providers()
    except ApiError:  # no single sign-on offered (or the API is away): the form is enough
        return
    base = data.settings().api_url
    for provider in providers:
        query = urlencode({"return_to": dashboard_url()})
        st.link_button(t("auth.sso", lang, name=provider["label"]),
                       f"{base}/api/v1/auth/oidc/{provider['name']}/login?{query}")


def password_page(lang: Lang, me: dict) -> None:
    """The new password a person must choose before anything else."""
    st.title(t("auth.change_title", lang))
    st.caption(t("auth.change_why", lang))
    with st.form("change_password"):
        current = st.text_input(t("auth.current", lang), type="password", key="pw_current")
        new = st.text_input(t("auth.new", lang), type="password", key="pw_new")
        again = st.text_input(t("auth.repeat", lang), type="password", key="pw_again")
        submitted = st.form_submit_button(t("auth.change", lang), type="primary")
    if submitted:
        if new != again:
            st.error(t("auth.mismatch", lang))
            return
        try:
            data.client().change_password(current, new)
        except ApiError as exc:
            st.error(t("auth.failed", lang, detail=exc.message))
        else:
            data.me.clear()
            st.rerun()
    sidebar(lang, me)


def sidebar(lang: Lang, me: dict) -> None:
    st.sidebar.caption(t("auth.signed_in_as", lang, name=me.get("display_name")
                         or me["username"]))
    if st.sidebar.button(t("auth.sign_out", lang), key="sign_out"):
        data.sign_out()
        st.rerun()


def current_person() -> dict | None:
    """The signed-in person (``/auth/me``), or None: not signed in, or the session ended
    (then it is forgotten, and why is shown at sign-in)."""
    try:
        return data.me(data.client())
    except data.NotSignedIn:
        return None
    except ApiRefused as exc:
        if exc.status == 401:
            st.session_state.pop(data.TOKEN_KEY, None)
            st.session_state[SIGNED_OUT_KEY] = exc.message
            return None
        raise
