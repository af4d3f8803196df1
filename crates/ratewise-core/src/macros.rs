//! Macros shared by the layer crates.

/// Defines `get_ref`, `get_mut` and `into_inner` for a middleware service whose inner service
/// `S` is the field `inner` (or the named field), so that every ratewise layer gives the same
/// three accessors with the same docs, as tower-http's layers do.
///
/// For the layer crates of this workspace; not part of the public API.
#[doc(hidden)]
#[macro_export]
macro_rules! define_inner_service_accessors {
    () => {
        $crate::define_inner_service_accessors!(inner);
    };
    ($field:ident) => {
        /// Gets a reference to the inner service.
        pub fn get_ref(&self) -> &S {
            &self.$field
        }

        /// Gets a mutable reference to the inner service.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.$field
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> S {
            self.$field
        }
    };
}
