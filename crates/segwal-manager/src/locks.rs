//! Lock helpers every module of the manager uses: a poisoned lock is taken
//! anyway. This module imports nothing of the crate, so that every other
//! module can import it without a circle.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A locked mutex, even if a holder panicked: the protected data is only
/// ever changed in steps that leave it consistent. The same holds for
/// [`read`] and [`write`].
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A read guard, even if a writer panicked (see [`lock`]).
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

/// A write guard, even if a writer panicked (see [`lock`]).
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
