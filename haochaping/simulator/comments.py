"""What citizens write: the real themes of bad reviews, the tags they pick, and a few kind words.

Themes follow what 通报 of provincial 好差评 platforms name most often. ``red`` marks the themes the
triage rules grade red (integrity, safety, conflict, media threats); the generator records the theme in
its ground truth so a check can tell which tickets should be red.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Theme:
    key: str
    weight: float  # share among bad reviews
    red: bool
    tags: tuple[str, ...]  # tag codes a device offers for it
    texts: tuple[str, ...]


BAD_THEMES: tuple[Theme, ...] = (
    Theme(
        "long_wait",
        0.26,
        False,
        ("wait_long",),
        (
            "等了两个小时才叫到号，窗口只开了两个。",
            "排队一上午，中午窗口直接停办了。",
            "取号后等了一个半小时，叫号系统还出错。",
            "预约了还要排队，预约有什么用？",
        ),
    ),
    Theme(
        "passed_around",
        0.17,
        False,
        ("passed_around",),
        (
            "几个窗口互相推诿，说不归他们管，让我去找别的部门。",
            "社保说找税务，税务说找社保，来回推了三次。",
            "窗口说要去街道开证明，街道说不用，推来推去。",
        ),
    ),
    Theme(
        "came_back",
        0.17,
        False,
        ("came_back",),
        (
            "材料一次没说清楚，跑了三趟还没办好。",
            "第二次来又说少一份复印件，为什么不一次性告知？",
            "前后跑了四趟，每次要求都不一样。",
        ),
    ),
    Theme(
        "attitude",
        0.18,
        False,
        ("attitude",),
        (
            "工作人员态度差，问两句就不耐烦。",
            "窗口人员一直在玩手机，叫了好几声才理人。",
            "说话很冲，态度生硬，让人很不舒服。",
        ),
    ),
    Theme(
        "fees",
        0.08,
        False,
        ("fees",),
        (
            "收费标准不公示，多收了工本费。",
            "让我去指定的打印店复印，一页收五块钱。",
        ),
    ),
    Theme(
        "online_broken",
        0.08,
        False,
        ("system",),
        (
            "网上办理一直提交失败，页面卡住。",
            "APP上传材料总是报错，最后还是得跑大厅。",
        ),
    ),
    Theme(
        "integrity",
        0.03,
        True,
        ("integrity",),
        (
            "工作人员暗示要给好处费才能加快办理，吃拿卡要。",
            "窗口人员索要红包，不给就说材料不全。",
            "被要求交一笔没有任何收据的费用，这是乱收费。",
        ),
    ),
    Theme(
        "safety",
        0.015,
        True,
        ("safety",),
        (
            "大厅电线裸露在地上，小孩差点触电，存在安全隐患。",
            "等候区有老人晕倒，半天没人管。",
        ),
    ),
    Theme(
        "conflict_media",
        0.015,
        True,
        ("conflict",),
        (
            "窗口人员和群众发生冲突还动手推人。",
            "再不解决我就找媒体曝光。",
        ),
    ),
)

GOOD_TEXTS: tuple[str, ...] = (
    "办事效率高，一次就办好了。",
    "工作人员很耐心，讲解清楚。",
    "最多跑一次，真方便。",
    "网上就能办，不用跑大厅，点赞。",
    "窗口服务热情周到。",
)
GOOD_TAGS: tuple[str, ...] = ("efficient", "patient", "one_visit", "clear_guidance")

MIDDLING_TEXTS: tuple[str, ...] = (
    "还行，就是人有点多。",
    "办好了，指引可以再清楚一点。",
)

# The words a citizen replies to an invitation SMS with, by stars (5 best).
SMS_WORDS: dict[int, tuple[str, ...]] = {
    5: ("5", "非常满意", "很满意"),
    4: ("4", "满意"),
    3: ("3", "基本满意", "还行"),
    2: ("2", "不满意"),
    1: ("1", "非常不满意"),
}

WORKORDER_TITLES: dict[str, tuple[str, ...]] = {
    "complaint": ("投诉窗口服务", "投诉办事效率低", "投诉推诿扯皮"),
    "report": ("举报乱收费", "举报工作人员吃拿卡要"),
    "help": ("求助办理进度", "求助材料要求"),
    "inquiry": ("咨询办理条件", "咨询办理时限"),
    "suggestion": ("建议增加窗口", "建议延长周末办理时间"),
    "praise": ("表扬窗口工作人员",),
}
