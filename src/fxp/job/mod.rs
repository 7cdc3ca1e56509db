//! One FXP job, whatever its shape (a file, a list, a tree): what it is to do
//! ([`plan`], pure), what it says while it runs ([`event`]), and the pure half of a
//! tree's decisions ([`mirror`]).

pub mod event;
pub mod mirror;
pub mod plan;
