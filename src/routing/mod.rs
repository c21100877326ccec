//! Where a queue call goes: pure, deterministic and explainable.
//!
//! - [`schedule`]: business hours and holidays read as a wall clock in the group's time zone;
//! - [`group`]: the checked group model (agents, overflow, redirects, final action);
//! - [`decide`](mod@decide): the decision for one call, with its explanation;
//! - [`decision`]: what the decision says, as words and as JSON.
//!
//! Nothing here does I/O or reads a clock: the time, the agents' states and the round-robin
//! cursors are passed in, so the same inputs always give the same decision.

pub mod decide;
pub mod decision;
pub mod group;
pub mod schedule;

pub use decide::{AgentState, Call, CallerStatus, Cursors, Presence, Route, decide};
pub use decision::{Action, Decision, Offer, Reason, Step, Verdict};
pub use group::{
    Agent, Condition, Extension, FinalAction, Greetings, Group, GroupId, Groups, Overflow,
};
pub use schedule::{ClockTime, Holiday, HolidayDate, Interval, Schedule, WeeklyHours};
