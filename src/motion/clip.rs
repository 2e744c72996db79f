//! Motion clips: kinematic pose sequences on the DeepMimic skeleton, read from and
//! written to the DeepMimic JSON format (docs/DESIGN.md §5) and BVH (`bvh.rs`), and the
//! project's own procedural motion families (walking for meta-training; dancing, jumping,
//! turning, squatting and kicking for testing).

use super::body::{Pose, JOINTS};
use crate::error::{Error, Result};
use glam::{DQuat, DVec3};
use rand::Rng;
use std::f64::consts::PI;

/// Numbers per DeepMimic frame: duration, root position (3), root rotation (4), then
/// the joints of [`JOINTS`]: quaternions (4), knees and elbows one angle.
pub const FRAME_LEN: usize = 44;

fn is_revolute(joint: usize) -> bool {
    JOINTS[joint].ends_with("knee") || JOINTS[joint].ends_with("elbow")
}

/// The angle of the rotation about z nearest to `q` (its twist about z): a knee's or an
/// elbow's angle.
pub(super) fn hinge_angle(q: DQuat) -> f64 {
    2.0 * q.z.atan2(q.w)
}

/// Quaternions are taken as unit rotations up to this difference in length; beyond it
/// they are still normalised, but the clip gets a warning.
const UNIT_TOLERANCE: f64 = 1e-3;

/// The quaternions of one clip that were off unit length (by more than
/// [`UNIT_TOLERANCE`]): public clips have lengths from 0.85 to 1.06, which normalising
/// repairs, and one warning per clip says so.
#[derive(Debug, Default)]
struct Renormalised {
    count: usize,
    /// The length furthest from 1.
    worst: f64,
}

impl Renormalised {
    /// `q` normalised, noted if it was off unit length; `None` for a quaternion of zero
    /// or infinite length, which has no direction to keep.
    fn unit(&mut self, q: DQuat) -> Option<DQuat> {
        let len = q.length();
        if !(len.is_finite() && len > 0.0) {
            return None;
        }
        if (len - 1.0).abs() > UNIT_TOLERANCE {
            if self.count == 0 || (len - 1.0).abs() > (self.worst - 1.0).abs() {
                self.worst = len;
            }
            self.count += 1;
        }
        Some(q / len)
    }

    fn warning(&self, path: &str) -> Option<String> {
        (self.count > 0).then(|| {
            format!(
                "motion clip {path}: normalised {} quaternions whose length was off 1 by more \
                 than {UNIT_TOLERANCE} (the worst {:.4})",
                self.count, self.worst
            )
        })
    }
}

/// A clip: poses at frame times.
#[derive(Clone, Debug)]
pub struct Clip {
    pub name: String,
    /// Duration of each frame (s): frame i starts at Σ_{j<i} durations\[j\].
    pub durations: Vec<f64>,
    pub poses: Vec<Pose>,
    pub looping: bool,
}

impl Clip {
    /// Total duration up to the last frame's start (the span poses can be sampled in).
    pub fn duration(&self) -> f64 {
        self.durations[..self.durations.len() - 1].iter().sum()
    }

    /// The pose at time t (clamped to the clip), interpolated between frames: root
    /// position linearly, rotations by slerp.
    pub fn sample(&self, t: f64) -> Pose {
        let mut start = 0.0;
        for i in 0..self.poses.len() - 1 {
            let d = self.durations[i];
            if t < start + d || i == self.poses.len() - 2 {
                let w = ((t - start) / d).clamp(0.0, 1.0);
                let (a, b) = (&self.poses[i], &self.poses[i + 1]);
                let mut joints = a.joints;
                for (j, q) in joints.iter_mut().enumerate() {
                    *q = a.joints[j].slerp(b.joints[j], w);
                }
                return Pose {
                    root: a.root.lerp(b.root, w),
                    root_rot: a.root_rot.slerp(b.root_rot, w),
                    joints,
                };
            }
            start += d;
        }
        self.poses[0]
    }

    /// Parses a DeepMimic clip; `path` names the file in errors and in the warning about
    /// quaternions that were not of unit length.
    pub fn from_deepmimic(text: &str, path: &str) -> Result<Self> {
        let (clip, renormalised) = Self::parse_deepmimic(text, path)?;
        if let Some(warning) = renormalised.warning(path) {
            log::warn!("{warning}");
        }
        Ok(clip)
    }

    /// [`Clip::from_deepmimic`] without the logging: the clip and its quaternions' lengths.
    fn parse_deepmimic(text: &str, path: &str) -> Result<(Self, Renormalised)> {
        let bad = |msg: String| Error::Config(format!("motion clip {path}: {msg}"));
        let json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let looping = match json.get("Loop") {
            Some(serde_json::Value::String(s)) => s != "none",
            Some(serde_json::Value::Bool(b)) => *b,
            Some(other) => return Err(bad(format!("\"Loop\" must be a string, got {other}"))),
            None => return Err(bad("missing field \"Loop\"".into())),
        };
        let frames = json
            .get("Frames")
            .ok_or_else(|| bad("missing field \"Frames\"".into()))?
            .as_array()
            .ok_or_else(|| bad("\"Frames\" must be an array of frames".into()))?;
        if frames.len() < 2 {
            return Err(bad(format!(
                "needs at least 2 frames, has {}",
                frames.len()
            )));
        }
        let mut renormalised = Renormalised::default();
        let mut durations = Vec::new();
        let mut poses = Vec::new();
        for (i, frame) in frames.iter().enumerate() {
            let values: Vec<f64> = frame
                .as_array()
                .ok_or_else(|| bad(format!("frame {i} is not an array")))?
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect();
            if values.len() != FRAME_LEN {
                return Err(bad(format!(
                    "frame {i} has {} numbers; a DeepMimic humanoid frame has {FRAME_LEN} \
                     (duration, root position 3, root rotation 4, chest 4, neck 4, and per side \
                     hip 4, knee 1, ankle 4, shoulder 4, elbow 1)",
                    values.len()
                )));
            }
            if let Some(k) = values.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("frame {i}, value {k} is not a finite number")));
            }
            if values[0] <= 0.0 && i + 1 < frames.len() {
                return Err(bad(format!(
                    "frame {i} has a non-positive duration {}",
                    values[0]
                )));
            }
            let mut quat = |k: usize| -> Result<DQuat> {
                let q = DQuat::from_xyzw(values[k + 1], values[k + 2], values[k + 3], values[k]);
                renormalised.unit(q).ok_or_else(|| {
                    bad(format!(
                        "frame {i}, values {k}-{}: the quaternion (w, x, y, z) = ({}, {}, {}, \
                         {}) has length {}; a rotation needs a non-zero one (the identity is \
                         1 0 0 0)",
                        k + 3,
                        q.w,
                        q.x,
                        q.y,
                        q.z,
                        q.length()
                    ))
                })
            };
            let mut joints = [DQuat::IDENTITY; 12];
            let mut k = 8;
            for (j, q) in joints.iter_mut().enumerate() {
                if is_revolute(j) {
                    *q = DQuat::from_rotation_z(values[k]);
                    k += 1;
                } else {
                    *q = quat(k)?;
                    k += 4;
                }
            }
            let root_rot = quat(4)?;
            durations.push(values[0]);
            poses.push(Pose {
                root: DVec3::new(values[1], values[2], values[3]),
                root_rot,
                joints,
            });
        }
        let clip = Self {
            name: path.to_string(),
            durations,
            poses,
            looping,
        }
        .with_finite_span(path)?;
        Ok((clip, renormalised))
    }

    /// Refuses a clip whose frame durations add up to infinity: windows draw their start
    /// in its span.
    pub(crate) fn with_finite_span(self, path: &str) -> Result<Self> {
        if self.duration().is_finite() {
            return Ok(self);
        }
        Err(Error::Config(format!(
            "motion clip {path}: the frame durations add up to more than any clip can last; \
             give them in seconds"
        )))
    }

    /// Reads a motion clip file: BVH for a name ending in `.bvh` (scaled to the engine's
    /// legs, see [`Clip::from_bvh`]), DeepMimic JSON otherwise.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(format!("cannot read motion clip {}: {e}", path.display())))?;
        let name = path.display().to_string();
        let bvh = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("bvh"));
        let mut clip = if bvh {
            Self::from_bvh(&text, &name, None)?
        } else {
            Self::from_deepmimic(&text, &name)?
        };
        clip.name = path
            .file_stem()
            .map_or(clip.name, |s| s.to_string_lossy().into_owned());
        Ok(clip)
    }

    /// The clip in DeepMimic JSON (knees and elbows as their angle about z).
    pub fn to_deepmimic(&self) -> String {
        let frames: Vec<Vec<f64>> = self
            .poses
            .iter()
            .zip(&self.durations)
            .map(|(p, d)| {
                let q = |q: DQuat| [q.w, q.x, q.y, q.z];
                let mut f = vec![*d, p.root.x, p.root.y, p.root.z];
                f.extend(q(p.root_rot));
                for (j, r) in p.joints.iter().enumerate() {
                    if is_revolute(j) {
                        f.push(hinge_angle(*r));
                    } else {
                        f.extend(q(*r));
                    }
                }
                f
            })
            .collect();
        serde_json::json!({
            "Loop": if self.looping { "wrap" } else { "none" },
            "Frames": frames,
        })
        .to_string()
    }
}

/// The project's procedural motion families.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Walk,
    Turn,
    Dance,
    Jump,
    Squat,
    Kick,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Walk,
        Family::Turn,
        Family::Dance,
        Family::Jump,
        Family::Squat,
        Family::Kick,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::Walk => "walk",
            Family::Turn => "turn",
            Family::Dance => "dance",
            Family::Jump => "jump",
            Family::Squat => "squat",
            Family::Kick => "kick",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown motion family '{s}'; known: {}",
                    Self::ALL.map(|f| f.name()).join(", ")
                ))
            })
    }

    /// A seeded random clip of this family, `seconds` long at 30 frames per second.
    /// Walking varies speed (0.8–1.6 m/s) and step length (0.5–0.8 m).
    pub fn clip(self, rng: &mut impl Rng, seconds: f64) -> Clip {
        let speed = rng.random_range(0.8..1.6);
        let step = rng.random_range(0.5..0.8);
        let phase0 = rng.random_range(0.0..2.0 * PI);
        let heading0 = rng.random_range(-PI..PI);
        let turn_rate = rng.random_range(0.6..1.2) * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let tempo = rng.random_range(1.6..2.4);
        let amp = rng.random_range(0.7..1.0);
        let dt = 1.0 / 30.0;
        let n = (seconds / dt).ceil() as usize + 1;
        let mut poses = Vec::with_capacity(n);
        let mut pos = DVec3::ZERO;
        for i in 0..n {
            let t = i as f64 * dt;
            // Each family gives a pose facing +x and the height of its lowest point
            // over the ground (zero but in a jump's flight).
            let ((mut pose, lift), heading, velocity) = match self {
                Family::Walk | Family::Turn => {
                    let heading = heading0
                        + if self == Family::Turn {
                            turn_rate * t
                        } else {
                            0.0
                        };
                    let phase = phase0 + PI * speed / step * t;
                    ((gait(phase, step, amp), 0.0), heading, speed)
                }
                Family::Dance => (
                    (dance(phase0 + PI * tempo * t, amp), 0.0),
                    heading0 + 0.4 * (PI * tempo * t / 4.0).sin(),
                    0.0,
                ),
                Family::Jump => (jump((t * tempo / 2.5).fract(), amp), heading0, 0.0),
                Family::Squat => (
                    (squat(phase0 + PI * tempo / 2.0 * t, amp), 0.0),
                    heading0,
                    0.0,
                ),
                Family::Kick => ((kick((t * tempo / 2.5).fract(), amp), 0.0), heading0, 0.0),
            };
            let facing = DQuat::from_rotation_y(heading);
            if i > 0 {
                pos += facing * DVec3::X * velocity * dt;
            }
            pose.root_rot = facing * pose.root_rot;
            pose.root =
                DVec3::new(pos.x, 0.0, pos.z) + facing * DVec3::new(pose.root.x, 0.0, pose.root.z);
            let low = pose
                .points()
                .iter()
                .map(|x| x.y)
                .fold(f64::INFINITY, f64::min);
            pose.root.y = lift - low;
            poses.push(pose);
        }
        Clip {
            name: self.name().to_string(),
            durations: vec![dt; n],
            poses,
            looping: false,
        }
    }
}

fn rz(a: f64) -> DQuat {
    DQuat::from_rotation_z(a)
}
fn rx(a: f64) -> DQuat {
    DQuat::from_rotation_x(a)
}

/// Joint indices of [`JOINTS`].
const CHEST: usize = 0;
const NECK: usize = 1;
const SIDE: [usize; 2] = [2, 7];
const HIP: usize = 0;
const KNEE: usize = 1;
const ANKLE: usize = 2;
const SHOULDER: usize = 3;
const ELBOW: usize = 4;

/// Standing at the origin; `Family::clip` places and grounds every frame.
fn standing() -> Pose {
    let mut p = Pose::neutral();
    p.root = DVec3::ZERO;
    p
}

/// One gait cycle per 2π of phase: hips swing ±, knees flex in swing, arms swing
/// against the legs, the root bobs twice per cycle and sways sideways.
fn gait(phase: f64, step: f64, amp: f64) -> Pose {
    let mut p = standing();
    let hip_amp = amp * (step / 1.6).atan() * 1.3;
    for (s, side) in SIDE.iter().enumerate() {
        let ph = phase + PI * s as f64;
        let swing = (ph.sin() * 0.5 + 0.5).powi(2) * (ph - 0.6).cos().max(0.0);
        p.joints[side + HIP] = rz(hip_amp * ph.sin());
        p.joints[side + KNEE] = rz(-(0.1 + 0.9 * amp * swing));
        p.joints[side + ANKLE] = rz(0.15 * (ph + 0.8).sin());
        p.joints[side + SHOULDER] =
            rz(-0.35 * amp * ph.sin()) * rx(if s == 0 { 0.1 } else { -0.1 });
        p.joints[side + ELBOW] = rz(0.3 + 0.15 * (ph + 0.5).sin());
    }
    p.joints[CHEST] = DQuat::from_rotation_y(0.08 * phase.sin()) * rz(-0.05);
    p.root.z = 0.02 * phase.sin();
    p.root_rot = DQuat::from_rotation_y(-0.06 * phase.sin());
    p
}

/// Side steps with swaying hips, arms waving overhead, knees bouncing on the beat.
fn dance(phase: f64, amp: f64) -> Pose {
    let mut p = standing();
    for (s, side) in SIDE.iter().enumerate() {
        let sign = if s == 0 { 1.0 } else { -1.0 };
        let ph = phase + PI * s as f64;
        p.joints[side + HIP] = rx(sign * 0.12 * amp * (1.0 + ph.sin()));
        p.joints[side + KNEE] = rz(-0.25 - 0.25 * amp * (2.0 * phase).sin().abs());
        p.joints[side + SHOULDER] = rx(sign * (1.2 + 0.8 * amp * ph.sin())) * rz(0.3 * ph.cos());
        p.joints[side + ELBOW] = rz(0.6 + 0.5 * (2.0 * ph).sin());
    }
    p.joints[CHEST] =
        DQuat::from_rotation_y(0.3 * amp * phase.sin()) * rx(0.1 * (2.0 * phase).cos());
    p.joints[NECK] = rx(0.15 * phase.sin());
    p.root.z = 0.12 * amp * phase.sin();
    p
}

/// A jump cycle over u ∈ [0, 1): crouch, push off, flight, landing, stand; and the
/// height of the feet over the ground.
fn jump(u: f64, amp: f64) -> (Pose, f64) {
    let mut p = standing();
    let crouch = (PI * (u / 0.35).min(1.0)).sin().max(0.0) * if u < 0.35 { 1.0 } else { 0.0 }
        + if (0.6..0.85).contains(&u) {
            (PI * (u - 0.6) / 0.25).sin()
        } else {
            0.0
        };
    let flight = if (0.35..0.6).contains(&u) {
        (PI * (u - 0.35) / 0.25).sin()
    } else {
        0.0
    };
    for side in SIDE {
        p.joints[side + HIP] = rz(0.9 * amp * crouch + 0.1 * flight);
        p.joints[side + KNEE] = rz(-1.4 * amp * crouch - 0.2 * flight);
        p.joints[side + ANKLE] = rz(0.5 * amp * crouch - 0.4 * flight);
        p.joints[side + SHOULDER] = rz(-0.6 * crouch + 2.2 * flight);
        p.joints[side + ELBOW] = rz(0.4 * crouch);
    }
    p.joints[CHEST] = rz(-0.4 * crouch);
    p.root.x = 0.1 * flight;
    (p, 0.3 * amp * flight)
}

/// Deep knee bends with the arms reaching forward.
fn squat(phase: f64, amp: f64) -> Pose {
    let mut p = standing();
    let depth = amp * (0.5 - 0.5 * phase.cos());
    for side in SIDE {
        p.joints[side + HIP] = rz(1.3 * depth);
        p.joints[side + KNEE] = rz(-1.9 * depth);
        p.joints[side + ANKLE] = rz(0.6 * depth);
        p.joints[side + SHOULDER] = rz(1.4 * depth);
    }
    p.joints[CHEST] = rz(-0.3 * depth);
    p
}

/// A front kick with the right leg over u ∈ [0, 1), arms out for balance.
fn kick(u: f64, amp: f64) -> Pose {
    let mut p = standing();
    let lift = (PI * u).sin().powi(2);
    let snap = (PI * ((u - 0.3) / 0.4).clamp(0.0, 1.0)).sin();
    let r = SIDE[0];
    p.joints[r + HIP] = rz(1.3 * amp * lift);
    p.joints[r + KNEE] = rz(-1.5 * lift * (1.0 - snap) - 0.1);
    p.joints[r + ANKLE] = rz(-0.3 * snap);
    for (s, side) in SIDE.iter().enumerate() {
        let sign = if s == 0 { 1.0 } else { -1.0 };
        p.joints[side + SHOULDER] = rx(sign * 0.8 * lift);
    }
    p.joints[SIDE[1] + KNEE] = rz(-0.15 * lift);
    p.joints[CHEST] = rz(0.2 * lift);
    p
}

#[cfg(test)]
mod tests;
