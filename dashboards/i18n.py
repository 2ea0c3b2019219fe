"""Every word the dashboards show, in Chinese and English.

``t(key, lang, **values)`` looks a message up; names of sites, kinds, districts and
metrics come from the registry and the catalog (both carry ``name_zh`` and ``name_en``),
so nothing is translated twice. A unit test checks that every message has both languages
with the same placeholders.
"""

from __future__ import annotations

from typing import Any, Literal

from tidefield.protocol.catalog import METRICS, SITE_KINDS
from tidefield.protocol.registry import DISTRICTS

Lang = Literal["zh", "en"]
LANGUAGES: dict[str, str] = {"zh": "中文", "en": "English"}

MESSAGES: dict[str, dict[str, str]] = {
    # --- the app ----------------------------------------------------------------------
    "app.title": {"zh": "潮田 · 青岛智慧农业与海洋监测",
                  "en": "Tidefield · Qingdao farms and seas"},
    "app.language": {"zh": "语言", "en": "Language"},
    "app.refresh": {"zh": "每 {seconds} 秒自动刷新", "en": "Refreshes every {seconds} s"},
    "app.refresh_off": {"zh": "自动刷新已关闭", "en": "Auto-refresh is off"},
    "app.choose": {"zh": "请选择", "en": "Choose"},
    "app.updated": {"zh": "更新于 {time}", "en": "Updated {time}"},
    "nav.overview": {"zh": "总览", "en": "Overview"},
    "nav.site": {"zh": "站点", "en": "Site"},
    "nav.alerts": {"zh": "告警", "en": "Alerts"},
    "nav.labs": {"zh": "数据实验室", "en": "Labs"},
    # --- errors -----------------------------------------------------------------------
    "error.unavailable": {
        "zh": "无法连接数据接口（{url}）：{detail}。页面将在接口恢复后自动更新。",
        "en": "The data API ({url}) cannot be reached: {detail}. The page updates by "
              "itself once it is back."},
    "error.refused": {
        "zh": "数据接口拒绝了此请求：{detail}",
        "en": "The data API refused this: {detail}"},
    "error.request": {"zh": "请求被拒绝：{detail}", "en": "The request was refused: {detail}"},
    "error.retry": {"zh": "重试", "en": "Retry"},
    # --- signing in -------------------------------------------------------------------
    "nav.admin": {"zh": "用户与审计", "en": "People & audit"},
    "auth.title": {"zh": "登录", "en": "Sign in"},
    "auth.username": {"zh": "用户名", "en": "User name"},
    "auth.password": {"zh": "密码", "en": "Password"},
    "auth.code": {"zh": "动态验证码（已启用双重验证时）",
                  "en": "One-time code (if you use a second factor)"},
    "auth.submit": {"zh": "登录", "en": "Sign in"},
    "auth.failed": {"zh": "登录失败：{detail}", "en": "Sign-in failed: {detail}"},
    "auth.ended": {"zh": "会话已结束，请重新登录（{detail}）",
                   "en": "Your session ended; please sign in again ({detail})"},
    "auth.sso": {"zh": "通过 {name} 单点登录", "en": "Sign in with {name}"},
    "auth.signed_in_as": {"zh": "当前用户：{name}", "en": "Signed in as {name}"},
    "auth.sign_out": {"zh": "退出登录", "en": "Sign out"},
    "auth.change_title": {"zh": "请设置新密码", "en": "Choose a new password"},
    "auth.change_why": {"zh": "首次登录或密码被重置后，须先设置自己的新密码。",
                        "en": "After a first sign-in or a reset, choose your own password "
                              "before going on."},
    "auth.current": {"zh": "当前密码", "en": "Current password"},
    "auth.new": {"zh": "新密码（至少 12 个字符）", "en": "New password (12 characters or more)"},
    "auth.repeat": {"zh": "再次输入新密码", "en": "New password again"},
    "auth.mismatch": {"zh": "两次输入的新密码不一致", "en": "The two new passwords differ"},
    "auth.change": {"zh": "修改密码", "en": "Change password"},
    "auth.changed": {"zh": "密码已修改", "en": "Password changed"},
    # --- administration -----------------------------------------------------------------
    "admin.title": {"zh": "用户与审计日志", "en": "People and the audit log"},
    "admin.people": {"zh": "用户", "en": "People"},
    "admin.audit": {"zh": "审计日志", "en": "Audit log"},
    "admin.organisation": {"zh": "机构", "en": "Organisation"},
    "admin.pick_user": {"zh": "选择用户", "en": "Person"},
    "admin.reset": {"zh": "重置密码", "en": "Reset password"},
    "admin.reset_done": {"zh": "{user} 的临时密码：{password}（仅显示一次）",
                         "en": "Temporary password of {user}: {password} (shown once)"},
    "admin.role": {"zh": "在 {org} 的角色", "en": "Role in {org}"},
    "admin.set_role": {"zh": "保存角色", "en": "Save role"},
    "admin.role_done": {"zh": "已保存", "en": "Saved"},
    "admin.filter_action": {"zh": "操作（如 sign_in.*）", "en": "Action (e.g. sign_in.*)"},
    "admin.filter_actor": {"zh": "操作人", "en": "Who"},
    "admin.download": {"zh": "下载 CSV", "en": "Download CSV"},
    "admin.no_rows": {"zh": "没有记录", "en": "No rows"},
    "role.viewer": {"zh": "查看者", "en": "viewer"},
    "role.operator": {"zh": "操作员", "en": "operator"},
    "role.admin": {"zh": "管理员", "en": "admin"},
    "role.none": {"zh": "无", "en": "none"},
    # --- overview ---------------------------------------------------------------------
    "overview.title": {"zh": "站点总览", "en": "Site overview"},
    "overview.sites": {"zh": "站点", "en": "Sites"},
    "overview.devices_online": {"zh": "在线设备", "en": "Devices online"},
    "overview.devices_offline": {"zh": "离线设备", "en": "Devices offline"},
    "overview.open_alerts": {"zh": "未关闭告警", "en": "Open alerts"},
    "overview.readings_per_second": {"zh": "读数/秒", "en": "Readings/s"},
    "overview.filter_kind": {"zh": "类型", "en": "Kind"},
    "overview.filter_district": {"zh": "区市", "en": "District"},
    "overview.filter_state": {"zh": "状态", "en": "State"},
    "overview.map": {"zh": "站点地图", "en": "Site map"},
    "overview.map_alt": {"zh": "青岛 {count} 个站点按状态着色的地图",
                         "en": "Map of {count} Qingdao sites coloured by state"},
    "overview.pick_site": {"zh": "选择站点查看详情", "en": "Pick a site to drill in"},
    "overview.open_site": {"zh": "打开站点", "en": "Open site"},
    "overview.table": {"zh": "站点列表", "en": "Sites"},
    "overview.legend": {"zh": "图例", "en": "Legend"},
    # --- site -------------------------------------------------------------------------
    "site.title": {"zh": "站点详情", "en": "Site details"},
    "site.choose": {"zh": "站点", "en": "Site"},
    "site.latest": {"zh": "最新读数", "en": "Latest values"},
    "site.history": {"zh": "历史曲线", "en": "History"},
    "site.range": {"zh": "时间范围", "en": "Range"},
    "site.metrics": {"zh": "指标", "en": "Metrics"},
    "site.devices": {"zh": "设备状态", "en": "Device health"},
    "site.no_data": {"zh": "此范围内没有读数", "en": "No readings in this range"},
    "site.bucket": {"zh": "粒度：{bucket}", "en": "Resolution: {bucket}"},
    "site.alerts": {"zh": "本站告警", "en": "Alerts at this site"},
    "site.none": {"zh": "没有", "en": "None"},
    "site.chart_alt": {"zh": "{metric} 的时间序列", "en": "Time series of {metric}"},
    # --- alerts -----------------------------------------------------------------------
    "alerts.title": {"zh": "告警处理", "en": "Alerts"},
    "incidents.title": {"zh": "事件（多站点同类告警）", "en": "Incidents (one rule, many sites)"},
    "incidents.line": {"zh": "{rule}：{sites} 个站点，{open} 个未确认 — {names}",
                       "en": "{rule}: {sites} sites, {open} unacknowledged — {names}"},
    "incidents.acknowledge": {"zh": "全部确认", "en": "Acknowledge all"},
    "incidents.acknowledged": {"zh": "事件 {id} 已确认 {count} 条告警",
                               "en": "Incident {id}: {count} alerts acknowledged"},
    "alerts.deliveries": {"zh": "通知记录", "en": "Notifications sent"},
    "alerts.no_deliveries": {"zh": "尚未发送通知", "en": "No notification sent yet"},
    "alerts.via": {"zh": "确认渠道：{via}", "en": "Acknowledged through {via}"},
    "alerts.filter_site": {"zh": "站点", "en": "Site"},
    "alerts.filter_category": {"zh": "类别", "en": "Kind"},
    "alerts.filter_severity": {"zh": "级别", "en": "Severity"},
    "alerts.filter_state": {"zh": "状态", "en": "State"},
    "alerts.all": {"zh": "全部", "en": "All"},
    "alerts.count": {"zh": "共 {count} 条告警", "en": "{count} alerts"},
    "alerts.none": {"zh": "没有符合条件的告警", "en": "No alerts match"},
    "alerts.pick": {"zh": "选择告警", "en": "Alert"},
    "alerts.history": {"zh": "处理记录", "en": "History"},
    "alerts.around": {"zh": "告警前后的读数", "en": "Readings around the alert"},
    "alerts.comment": {"zh": "处理说明", "en": "Comment"},
    "alerts.acknowledge": {"zh": "确认告警", "en": "Acknowledge"},
    "alerts.acknowledged": {"zh": "告警 {id} 已确认", "en": "Alert {id} acknowledged"},
    "alerts.need_comment": {"zh": "请填写处理说明", "en": "Please write a comment"},
    "alerts.not_allowed": {
        "zh": "您的角色不能确认此站点的告警（需要操作员或管理员角色）：{detail}",
        "en": "Your roles do not allow acknowledging alerts at this site (an operator's "
              "or admin's role is needed): {detail}"},
    "alerts.already": {"zh": "此告警已由 {who} 于 {time} 确认",
                       "en": "Acknowledged by {who} at {time}"},
    "alerts.closed": {"zh": "此告警已于 {time} 关闭", "en": "Closed at {time}"},
    # --- labs -------------------------------------------------------------------------
    "labs.title": {"zh": "数据实验室", "en": "Data labs"},
    "labs.series": {"zh": "序列", "en": "Series"},
    "labs.preview": {"zh": "预览", "en": "Preview"},
    "labs.start": {"zh": "开始日期", "en": "From"},
    "labs.end": {"zh": "结束日期（含）", "en": "To (inclusive)"},
    "labs.bucket": {"zh": "粒度", "en": "Resolution"},
    "labs.download_csv": {"zh": "下载 CSV", "en": "Download CSV"},
    "labs.download_parquet": {"zh": "下载 Parquet", "en": "Download Parquet"},
    "labs.bad_range": {"zh": "开始日期须不晚于结束日期", "en": "From must not be after To"},
    "labs.rows": {"zh": "{count} 个点", "en": "{count} points"},
    "labs.count": {"zh": "{count} 条序列", "en": "{count} series"},
    # --- columns and values -----------------------------------------------------------
    "col.site": {"zh": "站点", "en": "Site"},
    "col.id": {"zh": "编号", "en": "ID"},
    "col.name": {"zh": "名称", "en": "Name"},
    "col.kind": {"zh": "类型", "en": "Kind"},
    "col.district": {"zh": "区市", "en": "District"},
    "col.state": {"zh": "状态", "en": "State"},
    "col.open_alerts": {"zh": "告警", "en": "Alerts"},
    "col.device": {"zh": "设备", "en": "Device"},
    "col.metric": {"zh": "指标", "en": "Metric"},
    "col.value": {"zh": "数值", "en": "Value"},
    "col.unit": {"zh": "单位", "en": "Unit"},
    "col.time": {"zh": "时间", "en": "Time"},
    "col.trend": {"zh": "24 小时趋势", "en": "Last 24 h"},
    "col.last_seen": {"zh": "最后上报", "en": "Last seen"},
    "col.missing": {"zh": "丢失批次", "en": "Missing batches"},
    "col.battery": {"zh": "电池 (V)", "en": "Battery (V)"},
    "col.signal": {"zh": "信号 (dBm)", "en": "Signal (dBm)"},
    "col.queue": {"zh": "待发队列", "en": "Queue depth"},
    "col.queue_age": {"zh": "最早待发 (秒)", "en": "Oldest queued (s)"},
    "col.dropped": {"zh": "丢弃累计", "en": "Dropped"},
    "col.model": {"zh": "型号", "en": "Model"},
    "col.rule": {"zh": "规则", "en": "Rule"},
    "col.category": {"zh": "类别", "en": "Kind"},
    "col.severity": {"zh": "级别", "en": "Severity"},
    "col.message": {"zh": "描述", "en": "Message"},
    "col.opened": {"zh": "开始", "en": "Opened"},
    "col.updated": {"zh": "最近", "en": "Updated"},
    "col.peak": {"zh": "峰值", "en": "Peak"},
    "col.action": {"zh": "动作", "en": "Action"},
    "col.actor": {"zh": "执行者", "en": "By"},
    "col.note": {"zh": "说明", "en": "Note"},
    "col.contact": {"zh": "联系人", "en": "Contact"},
    "col.channel": {"zh": "渠道", "en": "Channel"},
    "col.outcome": {"zh": "结果", "en": "Outcome"},
    "col.latency": {"zh": "耗时 (ms)", "en": "Latency (ms)"},
    "col.score": {"zh": "异常分", "en": "Score"},
    "col.series": {"zh": "序列", "en": "Series"},
    "chart.reading": {"zh": "读数", "en": "reading"},
    "chart.anomaly_fault": {"zh": "传感器故障", "en": "sensor fault"},
    "chart.anomaly_event": {"zh": "真实事件", "en": "real event"},
    "chart.alert": {"zh": "告警", "en": "alert"},
    "state.ok": {"zh": "正常", "en": "OK"},
    "state.alert": {"zh": "告警", "en": "Alerting"},
    "state.offline": {"zh": "离线", "en": "Offline"},
    "device.online": {"zh": "在线", "en": "online"},
    "device.offline": {"zh": "离线", "en": "offline"},
    "device.unknown": {"zh": "未知", "en": "unknown"},
    "severity.critical": {"zh": "严重", "en": "critical"},
    "severity.warning": {"zh": "警告", "en": "warning"},
    "severity.info": {"zh": "提示", "en": "info"},
    "category.fault": {"zh": "传感器故障", "en": "sensor fault"},
    "category.event": {"zh": "真实事件", "en": "real event"},
    "alert_state.active": {"zh": "未关闭", "en": "active"},
    "alert_state.open": {"zh": "待处理", "en": "open"},
    "alert_state.acknowledged": {"zh": "已确认", "en": "acknowledged"},
    "alert_state.closed": {"zh": "已关闭", "en": "closed"},
    "action.opened": {"zh": "触发", "en": "opened"},
    "action.updated": {"zh": "更新", "en": "updated"},
    "action.acknowledged": {"zh": "确认", "en": "acknowledged"},
    "action.closed": {"zh": "关闭", "en": "closed"},
    "range.6h": {"zh": "6 小时", "en": "6 hours"},
    "range.24h": {"zh": "24 小时", "en": "24 hours"},
    "range.7d": {"zh": "7 天", "en": "7 days"},
    "range.30d": {"zh": "30 天", "en": "30 days"},
    "bucket.raw": {"zh": "原始读数", "en": "raw readings"},
    "bucket.5m": {"zh": "5 分钟", "en": "5 minutes"},
    "bucket.1h": {"zh": "1 小时", "en": "1 hour"},
    "bucket.1d": {"zh": "1 天", "en": "1 day"},
    # --- the fleet: sites and devices, health, maintenance, feedback -------------------
    "nav.fleet": {"zh": "站点与设备管理", "en": "Fleet admin"},
    "nav.health": {"zh": "设备健康", "en": "Device health"},
    "fleet.title": {"zh": "站点与设备管理", "en": "Sites and devices"},
    "fleet.sites": {"zh": "站点", "en": "Sites"},
    "fleet.devices": {"zh": "设备", "en": "Devices"},
    "fleet.registry": {"zh": "注册表文件", "en": "Registry file"},
    "fleet.new_site": {"zh": "新建站点", "en": "New site"},
    "fleet.id": {"zh": "编号（小写字母、数字、-）", "en": "Id (a-z, 0-9, -)"},
    "fleet.name_zh": {"zh": "中文名称", "en": "Name (Chinese)"},
    "fleet.name_en": {"zh": "英文名称", "en": "Name (English)"},
    "fleet.kind": {"zh": "类型", "en": "Kind"},
    "fleet.district": {"zh": "区市", "en": "District"},
    "fleet.lat": {"zh": "纬度", "en": "Latitude"},
    "fleet.lon": {"zh": "经度", "en": "Longitude"},
    "fleet.create_site": {"zh": "创建站点", "en": "Create site"},
    "fleet.site_created": {"zh": "站点 {id} 已创建（含 {devices} 台设备）",
                           "en": "Site {id} created with {devices} devices"},
    "fleet.pick_site": {"zh": "选择站点", "en": "Site"},
    "fleet.save_site": {"zh": "保存修改", "en": "Save changes"},
    "fleet.saved": {"zh": "已保存", "en": "Saved"},
    "fleet.retire_site": {"zh": "停用站点（保留历史数据）",
                          "en": "Retire site (history kept)"},
    "fleet.retired": {"zh": "{id} 已停用", "en": "{id} retired"},
    "fleet.template": {"zh": "设备模板", "en": "Template"},
    "fleet.device_id": {"zh": "设备编号（留空：站点-模板）",
                        "en": "Device id (empty: site-template)"},
    "fleet.add_device": {"zh": "添加设备", "en": "Add device"},
    "fleet.device_added": {"zh": "设备 {id} 已添加", "en": "Device {id} added"},
    "fleet.pick_device": {"zh": "选择设备", "en": "Device"},
    "fleet.move_to": {"zh": "迁移到站点", "en": "Move to site"},
    "fleet.move": {"zh": "迁移设备", "en": "Move device"},
    "fleet.moved": {"zh": "{id} 已迁移到 {site}", "en": "{id} moved to {site}"},
    "fleet.retire_device": {"zh": "停用设备（保留历史数据）",
                            "en": "Retire device (history kept)"},
    "fleet.rotate": {"zh": "替换现有账号", "en": "Replace an existing login"},
    "fleet.provision": {"zh": "生成接入账号", "en": "Make broker login"},
    "fleet.revoke": {"zh": "吊销接入账号", "en": "Revoke broker login"},
    "fleet.revoked": {"zh": "{id} 的接入账号已吊销", "en": "{id}'s broker login revoked"},
    "fleet.once": {"zh": "{user} 的密码仅显示这一次，请立即保存配置文件：",
                   "en": "{user}'s password is shown this once: save the config file now:"},
    "fleet.download_config": {"zh": "下载代理配置 edge.yaml",
                              "en": "Download agent config edge.yaml"},
    "fleet.download_ca": {"zh": "下载 CA 证书", "en": "Download the CA certificate"},
    "fleet.download_registry": {"zh": "下载 sites.csv", "en": "Download sites.csv"},
    "fleet.upload": {"zh": "导入 sites.csv", "en": "Import a sites.csv"},
    "fleet.import": {"zh": "导入", "en": "Import"},
    "fleet.imported": {"zh": "新建 {created} 个站点，更新 {updated} 个",
                       "en": "{created} sites created, {updated} updated"},
    "fleet.retired_col": {"zh": "已停用", "en": "Retired"},
    "health.title": {"zh": "设备健康（按需巡检排序）",
                     "en": "Device health, by what needs a visit"},
    "health.reasons": {"zh": "原因", "en": "Why"},
    "health.score": {"zh": "巡检优先级", "en": "Visit score"},
    "health.clock": {"zh": "时钟偏差 (秒)", "en": "Clock offset (s)"},
    "health.gaps": {"zh": "丢失批次", "en": "Lost batches"},
    "health.login": {"zh": "接入账号", "en": "Broker login"},
    "health.faults": {"zh": "未关闭故障", "en": "Open faults"},
    "health.none": {"zh": "没有在用设备", "en": "No device in service"},
    "maint.title": {"zh": "维护模式", "en": "Maintenance"},
    "maint.site": {"zh": "站点", "en": "Site"},
    "maint.device": {"zh": "设备（留空：整个站点）", "en": "Device (none: the whole site)"},
    "maint.whole_site": {"zh": "整个站点", "en": "whole site"},
    "maint.hours": {"zh": "时长（小时）", "en": "Hours"},
    "maint.reason": {"zh": "原因", "en": "Reason"},
    "maint.start": {"zh": "开始维护", "en": "Start maintenance"},
    "maint.started": {"zh": "维护已开始，至 {time}", "en": "Maintenance until {time}"},
    "maint.windows": {"zh": "维护时段", "en": "Maintenance windows"},
    "maint.end": {"zh": "结束所选维护", "en": "End the chosen window"},
    "maint.ended": {"zh": "维护已结束", "en": "Maintenance ended"},
    "maint.none": {"zh": "近期没有维护", "en": "No maintenance lately"},
    "chart.maintenance": {"zh": "维护", "en": "maintenance"},
    "feedback.title": {"zh": "处置反馈", "en": "What was it?"},
    "feedback.verdict": {"zh": "结论", "en": "Verdict"},
    "feedback.note": {"zh": "备注", "en": "Note"},
    "feedback.save": {"zh": "保存反馈", "en": "Save verdict"},
    "feedback.saved": {"zh": "已记录告警 {id} 的反馈", "en": "Verdict on alert {id} saved"},
    "feedback.given": {"zh": "已有反馈", "en": "Verdicts given"},
    "feedback.precision": {"zh": "每周准确率（按规则与成分）",
                           "en": "Precision week by week, per rule and component"},
    "feedback.no_report": {"zh": "最近 12 周没有告警反馈",
                           "en": "No verdicts in the last 12 weeks"},
    "feedback.download": {"zh": "下载反馈 CSV", "en": "Download verdicts (CSV)"},
    "verdict.real": {"zh": "真实事件", "en": "real"},
    "verdict.false_alarm": {"zh": "误报", "en": "false alarm"},
    "verdict.sensor_fault_fixed": {"zh": "传感器故障，已修复", "en": "sensor fault, fixed"},
}

# Alert rules the detector raises; an unknown rule is shown by its id.
RULES: dict[str, dict[str, str]] = {
    "hypoxia": {"zh": "低溶解氧", "en": "hypoxia"},
    "frost_risk": {"zh": "霜冻风险", "en": "frost risk"},
    "irrigation_failure": {"zh": "灌溉故障", "en": "irrigation failure"},
    "storm_wind": {"zh": "大风", "en": "storm wind"},
    "no_data": {"zh": "无数据", "en": "no data"},
    "sensor_fault": {"zh": "传感器故障", "en": "sensor fault"},
    "sensor_drift": {"zh": "传感器漂移", "en": "sensor drift"},
}


def t(key: str, lang: Lang, **values: Any) -> str:
    text = MESSAGES[key][lang]
    return text.format(**values) if values else text


def site_name(site: dict, lang: Lang) -> str:
    return site[f"name_{lang}"]


def kind_name(kind: str, lang: Lang) -> str:
    entry = SITE_KINDS.get(kind)
    return getattr(entry, f"name_{lang}") if entry else kind


def district_name(district: str, lang: Lang) -> str:
    names = DISTRICTS.get(district)
    return names[0 if lang == "zh" else 1] if names else district


def metric_name(metric: str, lang: Lang) -> str:
    entry = METRICS.get(metric)
    return getattr(entry, f"name_{lang}") if entry else metric


def rule_name(rule: str, lang: Lang) -> str:
    return RULES.get(rule, {}).get(lang, rule)


def label(prefix: str, value: str, lang: Lang) -> str:
    """A coded value (a state, a severity...) in words; unknown codes are shown as is."""
    entry = MESSAGES.get(f"{prefix}.{value}")
    return entry[lang] if entry else value
