"""Who the rater is: the one rule every labelling event (Label tab, the chat's 👍/👎, A/B votes)
goes through, so nobody can label under someone else's name while sign-in is on.

    Hugging Face sign-in on (a Space with `hf_oauth: true`)   the signed-in username
    basic auth on (PERSONA_STUDIO_AUTH, self-hosting)        the logged-in user name
    neither                                                  the name typed in the Rater box

With sign-in on, a name typed anywhere (the box is hidden; an API call's `rater` argument) is
ignored, and a call without a signed-in user is refused.
"""

# No `from __future__ import annotations`: handlers built on this take `gr.OAuthProfile | None`,
# which Gradio recognises from the live annotation to inject the signed-in profile.

import gradio as gr

SIGN_IN_HINT = "Sign in with Hugging Face (button at the top): labels are saved under your username."
TYPE_NAME_HINT = "Enter your name in the 'Rater' box at the top first: labels are saved under it."


def rater_for(ctx, typed: str | None, profile: gr.OAuthProfile | None, request: gr.Request | None) -> str:
    """The rater of a labelling event under the app's sign-in mode (`ctx.oauth`, `ctx.auth`):
    the signed-in Hugging Face username, else the basic-auth user, else the typed name."""
    if ctx.oauth:
        username = getattr(profile, "username", None)
        if not username:
            raise gr.Error(SIGN_IN_HINT)
        return username
    user = getattr(request, "username", None) if request is not None else None
    if user:
        return user
    if ctx.auth:  # behind basic auth every page request has a user; an API call without one
        raise gr.Error("Log in first: labels are saved under your login name.")
    name = (typed or "").strip()
    if not name:
        raise gr.Error(TYPE_NAME_HINT)
    return name
