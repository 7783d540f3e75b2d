//! The attacks, one module per phase (see the crate's documentation): each is a function
//! that takes the well-behaved [`Peer`](crate::peer::Peer) and breaks one kind of rule.

pub mod bulk;
pub mod death;
pub mod geometry;
pub mod protocol;
pub mod ring;
pub mod scribble;
pub mod slot;
