"""Notifications: alert changes reach people (WeCom, DingTalk, Feishu/Lark, mail, SMS,
signed webhooks), routed, escalated, reminded, grouped into incidents, acknowledged from
the phone. ``service`` is the loop, ``store`` every query, ``channels`` how a message
leaves, ``messages`` what it says, ``routing`` the validated shapes of contacts, groups
and routes (the API's and the configuration file's), ``sink`` the local webhook receiver
that ``tidefield up`` runs. docs/notifications.md tells the whole story.
"""
