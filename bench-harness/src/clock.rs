//! One time base for the whole run: monotonic `Instant`s for scheduling,
//! converted to wall-clock microseconds through a single anchor so that
//! producer stamps and consumer readings in this process never disagree
//! by the wall clock's own slewing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_wall_us: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Clock {
            base: Instant::now(),
            base_wall_us: wall.as_micros() as u64,
        }
    }

    pub fn wall_us(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.base) {
            Some(d) => self.base_wall_us + d.as_micros() as u64,
            None => self
                .base_wall_us
                .saturating_sub(self.base.duration_since(at).as_micros() as u64),
        }
    }

    pub fn now_wall_us(&self) -> u64 {
        self.wall_us(Instant::now())
    }

    /// The `Instant` of a wall-clock stamp made through this clock.
    pub fn instant_of(&self, wall_us: u64) -> Instant {
        if wall_us >= self.base_wall_us {
            self.base + Duration::from_micros(wall_us - self.base_wall_us)
        } else {
            self.base
                .checked_sub(Duration::from_micros(self.base_wall_us - wall_us))
                .unwrap_or(self.base)
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_and_instant_convert_both_ways() {
        let c = Clock::new();
        let later = Instant::now() + Duration::from_millis(1500);
        let w = c.wall_us(later);
        assert!(w >= c.base_wall_us + 1_500_000);
        let back = c.instant_of(w);
        let diff = back.max(later) - back.min(later);
        assert!(diff < Duration::from_micros(2));
    }
}
