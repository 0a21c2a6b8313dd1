"""The starter bank: questions a new recurring prompt asks, one a week, in rotation.

Input: nothing. Output: :data:`STARTER_BANK`, a tuple of questions we wrote ourselves,
a mix of work and social, each short and specific enough to answer in a few lines of
email.

Why they live in code: the bank ships with the package, so a fresh install has good
prompts without a data migration or a seed step. A prompt created "from the starter
bank" gets a *copy* of these strings in its own ``Prompt.bank`` column at creation;
rotation (``digests.rotation``) then indexes into that copy. Editing, reordering or
extending this tuple in a later release therefore never changes what a running prompt
asks, nor shifts the indices its earlier ``PromptRun`` rows recorded.
"""

from __future__ import annotations

STARTER_BANK: tuple[str, ...] = (
    # What people are doing
    "What are you working on this week?",
    "What is the one thing you most want to finish by Friday?",
    "What's blocking you right now, and who could help unblock it?",
    "What did you ship, fix or finish last week?",
    "Which decision are you weighing at the moment, and what are the options?",
    "What is something your team does that the rest of us might not know about?",
    "What question from a customer or colleague stuck with you recently?",
    "What's a problem you solved recently that took longer than it looked?",
    # Learning and sharing
    "What did you learn recently that others here should know?",
    "Which tool or shortcut saves you the most time?",
    "What book, podcast or article would you recommend, and why?",
    "What's one thing you wish you had known in your first month here?",
    "Which meeting, report or habit could we drop without missing it?",
    "What's a mistake you made recently, and what did it teach you?",
    "Which document or page here do you keep going back to?",
    "What skill are you trying to get better at this quarter?",
    "What is the best piece of advice a colleague ever gave you?",
    "Which idea from another team or company would you like us to try?",
    "What's a term or acronym here that confused you, and what does it mean?",
    "If you could automate one chore in your week, which would it be?",
    # Recognition
    "What's a small win from last week worth celebrating?",
    "Who helped you recently, and how?",
    "Whose work made your job easier this month?",
    "Which newcomer has impressed you lately, and with what?",
    "What went better than expected recently?",
    # Ways of working
    "How do you protect time for focused work?",
    "What does a good handover look like to you?",
    "What is your favourite way to start the working day?",
    "What's one change that would make our meetings more useful?",
    "How do you keep track of everything you have promised to do?",
    "What's a process here that works surprisingly well?",
    "Where do you go when you need a fresh idea?",
    "What would you tell a friend who is thinking of joining us?",
    # Social
    "What did you do last weekend that you enjoyed?",
    "What are you looking forward to outside work this month?",
    "What's the best thing you ate or cooked recently?",
    "Which place near you would you take a visiting colleague?",
    "What hobby have you picked up, or picked up again, lately?",
    "What song or album has been on repeat for you?",
    "What's a film or series you would happily watch again?",
    "What small thing made you smile this week?",
    "Where would you go on a trip if you could leave tomorrow?",
    "What's the view from where you are working today?",
    "What was your first ever job, and what did it teach you?",
    "What game, sport or puzzle do you enjoy, and who here should join you?",
    "What's a local tradition where you live that others might not know?",
    "Which app on your phone would you recommend to everyone here?",
    "What's something you made with your hands recently?",
    "If you could swap jobs with anyone here for a day, whose job would it be?",
    "What's a question you would like us to ask everyone next week?",
)
