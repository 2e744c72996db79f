//! BVH motion capture files (the Biovision hierarchy: the interchange format of the CMU
//! database and most capture software): the parser, forward kinematics, the retargeting
//! onto the engine's DeepMimic skeleton behind [`Clip::from_bvh`], and [`Clip::to_bvh`].
//!
//! **Retargeting.** The BVH skeleton has other bones, other lengths and another rest pose
//! than the engine's, so rotations are not copied: each engine segment is turned so that
//! its bone points where the BVH skeleton's does after forward kinematics, and where the
//! engine body has points that show a segment's twist, those points decide it too.
//!
//! - World: the BVH axis nearest the rest pose's hips-to-neck direction is up (Y in CMU
//!   and nearly every file; Z-up files work too), and a turn about it makes the rest
//!   pose face +x with its right on +z, the engine's convention.
//! - Root: at the midpoint of the two hip joints (the tops of the thighs); its frame has
//!   the hip line exactly and the pelvis-to-chest direction made orthogonal to it.
//! - Chest: the engine's chest point is a point of the BVH spine, interpolated between
//!   its joints at the engine's chest height (51 % from the hips to the neck); its frame
//!   has the chest-to-neck direction exactly and the shoulder line made orthogonal to it.
//! - Head: the least turn from the chest frame that points it from the neck to the head.
//! - Thighs, upper arms and feet: the BVH joint's world rotation times a constant
//!   calibration (the least turn from the engine's rest bone to the BVH's rest bone, so
//!   a T-pose's arms map onto the engine's hanging arms), then the least turn that
//!   points the bone exactly. The calibration also carries the BVH's twist about the
//!   bone over; how a T-pose twist corresponds to the engine's is a convention, so twist
//!   is approximate where no point shows it: about a straight limb, and the heel's side.
//! - Knees and elbows are hinges about the parent segment's z: the thigh (upper arm) is
//!   first twisted about its bone, by the smaller turn, until its z is normal to the plane
//!   of the two bones, fully from a bend of 20° on and not at all below 5° (where that
//!   plane is noise); the hinge angle is then the one that points the shin (forearm)
//!   closest to the BVH's. A bent limb thus matches exactly; a BVH knee that also twists
//!   or splays loses that part.
//!
//! Joints are found by name ([`NAMES`]), the clip is scaled to the engine's leg length
//! unless the caller gives a scale, and the lowest body point over the clip is put on the
//! ground (the format does not say where the floor is).

use super::body::{
    mirrored, Pose, CHEST_OFFSET, FOREARM_OFFSET, HEAD_OFFSET, HIP_OFFSET, NECK_OFFSET,
    SHIN_OFFSET, SHOULDER_OFFSET, THIGH_OFFSET, TOE_OFFSET, UPPER_ARM_OFFSET,
};
use super::clip::{hinge_angle, Clip};
use crate::error::{Error, Result};
use glam::{DMat3, DQuat, DVec3, EulerRot};
use std::f64::consts::{FRAC_PI_2, PI};
use std::fmt::Write;

/// What a channel sets: a coordinate (0, 1, 2 for x, y, z) of the joint's offset, or a
/// rotation about that axis in degrees. A joint's rotations compose in the file's channel
/// order, the first outermost: R = R₁ R₂ R₃.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Channel {
    Position(usize),
    Rotation(usize),
}

const CHANNEL_NAMES: [(&str, Channel); 6] = [
    ("Xposition", Channel::Position(0)),
    ("Yposition", Channel::Position(1)),
    ("Zposition", Channel::Position(2)),
    ("Xrotation", Channel::Rotation(0)),
    ("Yrotation", Channel::Rotation(1)),
    ("Zrotation", Channel::Rotation(2)),
];

/// A joint of the hierarchy, or an End Site (no channels, no children).
#[derive(Clone, Debug)]
struct Joint {
    name: String,
    parent: Option<usize>,
    offset: DVec3,
    channels: Vec<Channel>,
    /// Column of its first channel in a frame's row.
    first: usize,
    end_site: bool,
}

/// A parsed file: joints in declaration order (parents first) and the frames.
struct Bvh {
    joints: Vec<Joint>,
    frame_time: f64,
    n_channels: usize,
    /// Frame after frame, `n_channels` values each.
    values: Vec<f64>,
    /// The line of each frame's row, for errors.
    row_lines: Vec<usize>,
}

/// The tokens of the HIERARCHY section with their (1-based) lines.
struct Tokens<'a> {
    tokens: Vec<(&'a str, usize)>,
    next: usize,
    /// The line of MOTION, where the section ends.
    end_line: usize,
    path: &'a str,
}

/// An error at a line of file `path`.
fn at_line(path: &str, line: usize, msg: impl std::fmt::Display) -> Error {
    Error::Config(format!("motion clip {path}, line {line}: {msg}"))
}

/// A finite number, or an error that shows the text.
fn number(path: &str, line: usize, text: &str) -> Result<f64> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(at_line(
            path,
            line,
            format!("'{text}' is not a finite number (BVH numbers look like -12.5 or 3e-2)"),
        )),
    }
}

impl<'a> Tokens<'a> {
    fn next(&mut self, expected: &str) -> Result<(&'a str, usize)> {
        let t = self.tokens.get(self.next).copied().ok_or_else(|| {
            at_line(
                self.path,
                self.end_line,
                format!(
                    "the HIERARCHY ends where {expected} was expected; a joint's braces may \
                     not be closed"
                ),
            )
        })?;
        self.next += 1;
        Ok(t)
    }

    fn expect(&mut self, word: &str) -> Result<usize> {
        let (t, line) = self.next(word)?;
        if t.eq_ignore_ascii_case(word) {
            Ok(line)
        } else {
            Err(at_line(
                self.path,
                line,
                format!("expected {word}, found '{t}'"),
            ))
        }
    }

    fn number(&mut self, what: &str) -> Result<f64> {
        let (t, line) = self.next(what)?;
        number(self.path, line, t)
    }

    /// The rest of `line` as a joint name (names may contain spaces), up to a `{`.
    fn name(&mut self, line: usize) -> Result<String> {
        let mut parts = Vec::new();
        while let Some(&(t, l)) = self.tokens.get(self.next) {
            if l != line || t == "{" {
                break;
            }
            parts.push(t);
            self.next += 1;
        }
        if parts.is_empty() {
            return Err(at_line(self.path, line, "a joint needs a name on its line"));
        }
        Ok(parts.join(" "))
    }
}

impl Bvh {
    fn parse(text: &str, path: &str) -> Result<Self> {
        let lines: Vec<&str> = text.lines().collect();
        let motion = lines
            .iter()
            .position(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case("MOTION"))
            })
            .ok_or_else(|| {
                Error::Config(format!(
                    "motion clip {path}: no MOTION line; a BVH file is a HIERARCHY section, \
                     then MOTION with the frames"
                ))
            })?;
        let mut toks = Tokens {
            tokens: lines[..motion]
                .iter()
                .enumerate()
                .flat_map(|(i, l)| l.split_whitespace().map(move |t| (t, i + 1)))
                .collect(),
            next: 0,
            end_line: motion + 1,
            path,
        };
        let (joints, n_channels) = Self::hierarchy(&mut toks)?;
        if let Some(&(t, line)) = toks.tokens.get(toks.next) {
            return Err(at_line(
                path,
                line,
                format!(
                    "'{t}' after the root joint's closing brace; a BVH file has one ROOT, \
                     then MOTION"
                ),
            ));
        }
        if n_channels == 0 {
            return Err(at_line(
                path,
                motion + 1,
                "no joint has CHANNELS, so nothing moves",
            ));
        }
        // MOTION: "Frames: n", "Frame Time: t", then one row of values per frame.
        let mut rows = lines
            .iter()
            .enumerate()
            .skip(motion + 1)
            .map(|(i, l)| (i + 1, *l))
            .filter(|(_, l)| !l.trim().is_empty());
        let mut header = |key: &str| -> Result<(usize, &str)> {
            let (line, text) = rows.next().ok_or_else(|| {
                at_line(path, motion + 1, format!("MOTION needs a '{key}:' line"))
            })?;
            match text.split_once(':') {
                Some((k, v))
                    if k.split_whitespace()
                        .map(str::to_ascii_lowercase)
                        .eq(key.split_whitespace().map(str::to_ascii_lowercase)) =>
                {
                    Ok((line, v.trim()))
                }
                _ => Err(at_line(
                    path,
                    line,
                    format!("expected '{key}: ...', found '{}'", text.trim()),
                )),
            }
        };
        let (frames_line, frames) = header("Frames")?;
        let frames: usize = frames.parse().map_err(|_| {
            at_line(
                path,
                frames_line,
                format!("'Frames:' needs a count of frames, found '{frames}'"),
            )
        })?;
        let (time_line, time) = header("Frame Time")?;
        let frame_time = number(path, time_line, time)?;
        if frame_time <= 0.0 {
            return Err(at_line(
                path,
                time_line,
                "the frame time must be positive (seconds per frame)",
            ));
        }
        let mut values = Vec::new();
        let mut row_lines = Vec::new();
        for (line, text) in rows {
            let start = values.len();
            for t in text.split_whitespace() {
                values.push(number(path, line, t)?);
            }
            if values.len() - start != n_channels {
                return Err(at_line(
                    path,
                    line,
                    format!(
                        "frame {} has {} values; the HIERARCHY declares {n_channels} channels",
                        row_lines.len(),
                        values.len() - start
                    ),
                ));
            }
            row_lines.push(line);
        }
        if row_lines.len() != frames {
            return Err(at_line(
                path,
                frames_line,
                format!(
                    "'Frames: {frames}', but {} rows of values follow: a cut file has lost \
                     rows; otherwise correct the count",
                    row_lines.len()
                ),
            ));
        }
        if frames < 2 {
            return Err(at_line(
                path,
                frames_line,
                format!("a clip needs at least 2 frames, has {frames}"),
            ));
        }
        Ok(Self {
            joints,
            frame_time,
            n_channels,
            values,
            row_lines,
        })
    }

    /// HIERARCHY, ROOT and the joints under it, read without recursion (a deep file
    /// cannot overflow the stack); also the number of channels.
    fn hierarchy(toks: &mut Tokens) -> Result<(Vec<Joint>, usize)> {
        let path = toks.path;
        toks.expect("HIERARCHY")?;
        let line = toks.expect("ROOT")?;
        let mut joints = vec![Joint {
            name: toks.name(line)?,
            parent: None,
            offset: DVec3::ZERO,
            channels: Vec::new(),
            first: 0,
            end_site: false,
        }];
        toks.expect("{")?;
        // Per joint: the line it opened on, whether OFFSET and CHANNELS were seen.
        let mut seen = vec![(line, false, false)];
        let mut stack = vec![0];
        let mut n_channels = 0;
        while let Some(&cur) = stack.last() {
            let (t, line) = toks.next("OFFSET, CHANNELS, JOINT, End Site or }")?;
            let end_site = joints[cur].end_site;
            // Keywords in any case, as `Tokens::expect` reads them.
            let key = t.to_ascii_uppercase();
            match key.as_str() {
                "OFFSET" if !seen[cur].1 => {
                    joints[cur].offset = DVec3::new(
                        toks.number("the offset's x")?,
                        toks.number("the offset's y")?,
                        toks.number("the offset's z")?,
                    );
                    seen[cur].1 = true;
                }
                "CHANNELS" if !end_site && !seen[cur].2 => {
                    let (n, nl) = toks.next("the number of channels")?;
                    let n = n.parse::<usize>().ok().filter(|n| *n <= 6).ok_or_else(|| {
                        at_line(
                            path,
                            nl,
                            format!("CHANNELS needs a count from 0 to 6, found '{n}'"),
                        )
                    })?;
                    let mut channels = Vec::with_capacity(n);
                    for _ in 0..n {
                        let (name, cl) = toks.next("a channel name")?;
                        let c = CHANNEL_NAMES
                            .iter()
                            .find(|(cn, _)| cn.eq_ignore_ascii_case(name))
                            .map(|(_, c)| *c)
                            .ok_or_else(|| {
                                at_line(
                                    path,
                                    cl,
                                    format!(
                                        "unknown channel '{name}'; channels are {}",
                                        CHANNEL_NAMES.map(|(n, _)| n).join(", ")
                                    ),
                                )
                            })?;
                        if channels.contains(&c) {
                            return Err(at_line(
                                path,
                                cl,
                                format!("channel {name} is listed twice"),
                            ));
                        }
                        channels.push(c);
                    }
                    joints[cur].channels = channels;
                    joints[cur].first = n_channels;
                    n_channels += n;
                    seen[cur].2 = true;
                }
                "JOINT" | "END" if !end_site => {
                    let name = if key == "JOINT" {
                        toks.name(line)?
                    } else {
                        toks.expect("Site")?;
                        "End Site".to_string()
                    };
                    toks.expect("{")?;
                    joints.push(Joint {
                        name,
                        parent: Some(cur),
                        offset: DVec3::ZERO,
                        channels: Vec::new(),
                        first: 0,
                        end_site: key == "END",
                    });
                    seen.push((line, false, false));
                    stack.push(joints.len() - 1);
                }
                "}" => {
                    if !seen[cur].1 {
                        return Err(at_line(
                            path,
                            seen[cur].0,
                            format!("{} has no OFFSET", joints[cur].name),
                        ));
                    }
                    stack.pop();
                }
                _ => {
                    let name = &joints[cur].name;
                    let msg = if end_site && matches!(key.as_str(), "CHANNELS" | "JOINT" | "END") {
                        format!("{t} in an End Site, which has only an OFFSET")
                    } else if matches!(key.as_str(), "OFFSET" | "CHANNELS") {
                        format!("a second {t} in {name}")
                    } else {
                        format!(
                            "unexpected '{t}' in {name}; a joint has an OFFSET, CHANNELS, its \
                             JOINTs or End Site, then }}"
                        )
                    };
                    return Err(at_line(path, line, msg));
                }
            }
        }
        Ok((joints, n_channels))
    }

    fn frames(&self) -> usize {
        self.row_lines.len()
    }

    /// World positions and rotations of every joint in frame `f`, or in the rest pose for
    /// `None` (rotations zero, positions the OFFSETs). A position channel replaces its
    /// coordinate of the offset, as in the CMU files' roots.
    fn pose(&self, f: Option<usize>) -> (Vec<DVec3>, Vec<DQuat>) {
        let row = f.map(|f| &self.values[f * self.n_channels..(f + 1) * self.n_channels]);
        let mut pos: Vec<DVec3> = Vec::with_capacity(self.joints.len());
        let mut rot: Vec<DQuat> = Vec::with_capacity(self.joints.len());
        for j in &self.joints {
            let mut t = j.offset;
            let mut r = DQuat::IDENTITY;
            if let Some(row) = row {
                for (c, v) in j.channels.iter().zip(&row[j.first..]) {
                    match *c {
                        Channel::Position(axis) => t[axis] = *v,
                        Channel::Rotation(axis) => {
                            let mut a = DVec3::ZERO;
                            a[axis] = 1.0;
                            r *= DQuat::from_axis_angle(a, v.to_radians());
                        }
                    }
                }
            }
            let (pp, pr) = j
                .parent
                .map_or((DVec3::ZERO, DQuat::IDENTITY), |p| (pos[p], rot[p]));
            pos.push(pp + pr * t);
            rot.push(pr * r);
        }
        (pos, rot)
    }
}

/// The joint names this loader knows for the engine's points, tried in order and compared
/// without case, `_`, `-`, `.`, spaces and any `prefix:` (Mixamo's `mixamorig:`); `*` is
/// the side, `Left` or `L`, `Right` or `R`. This covers the CMU database's BVH
/// conversions, Mixamo, LAFAN1 and Biovision's own skeleton. `*Arm` comes before
/// `*Shoulder`: in CMU and Mixamo files `LeftShoulder` is the collarbone, in Biovision's
/// the upper arm. Toes, wrists and the head fall back to the End Site of the ankle,
/// elbow and neck.
pub const NAMES: [(&str, &[&str]); 9] = [
    ("hip", &["*UpLeg", "*UpperLeg", "*Thigh", "*Hip"]),
    (
        "knee",
        &["*Leg", "*LowLeg", "*LowerLeg", "*Shin", "*Calf", "*Knee"],
    ),
    ("ankle", &["*Foot", "*Ankle"]),
    ("toe", &["*ToeBase", "*Toe", "*Toes"]),
    ("shoulder", &["*Arm", "*UpArm", "*UpperArm", "*Shoulder"]),
    ("elbow", &["*ForeArm", "*LowArm", "*LowerArm", "*Elbow"]),
    ("wrist", &["*Hand", "*Wrist"]),
    ("neck", &["Neck"]),
    ("head", &["Head"]),
];

/// Indices into [`NAMES`].
const HIP: usize = 0;
const KNEE: usize = 1;
const ANKLE: usize = 2;
const TOE: usize = 3;
const SHOULDER: usize = 4;
const ELBOW: usize = 5;
const WRIST: usize = 6;
const NECK: usize = 7;
const HEAD: usize = 8;

/// A name without case, separators and namespace prefix.
fn canonical(name: &str) -> String {
    let name = name.rsplit(':').next().unwrap_or(name);
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The BVH joints the engine reads, and the constants of the retargeting.
struct Retarget {
    /// Per side (right, then left), the joint of each entry of [`NAMES`] (neck and head
    /// the same on both sides).
    joints: [[usize; 9]; 2],
    /// The chest point: between joints a and b, w of the way.
    chest: (usize, usize, f64),
    /// BVH world to engine world (Y up, rest pose facing +x, right on +z).
    align: DQuat,
    /// Metres per BVH unit.
    scale: f64,
    /// Per side: the rest-pose calibration of the thigh, the foot and the upper arm.
    calibration: [[DQuat; 3]; 2],
}

/// The engine's chest height between the hips and the neck.
fn chest_fraction() -> f64 {
    CHEST_OFFSET.y / (CHEST_OFFSET.y + NECK_OFFSET.y)
}

/// The rotation taking the engine's y and z to `up` and `side`, keeping `side` exactly
/// (`side_exact`) or `up`, and the other made orthogonal to it.
fn frame(up: DVec3, side: DVec3, side_exact: bool) -> DQuat {
    let (y, z) = if side_exact {
        let z = side.normalize();
        ((up - z * up.dot(z)).normalize(), z)
    } else {
        let y = up.normalize();
        (y, (side - y * side.dot(y)).normalize())
    };
    DQuat::from_mat3(&DMat3::from_cols(y.cross(z), y, z))
}

/// `rot` turned by the least rotation that takes its `local` direction onto `target`.
fn aim(rot: DQuat, local: DVec3, target: DVec3) -> DQuat {
    DQuat::from_rotation_arc(rot * local.normalize(), target.normalize()) * rot
}

/// A thigh's or upper arm's world rotation twisted about its bone (local −y) so that its
/// hinge axis (local z) is normal to the plane of the bone and `next` (the next bone's
/// direction): by the smaller of the two turns that do it, fully from a bend of 20° on,
/// not at all below 5°, smoothly in between. Also the hinge angle that points the next
/// bone closest to `next`.
fn hinge(rot: DQuat, next: DVec3) -> (DQuat, f64) {
    let bone = rot * DVec3::NEG_Y;
    let normal = bone.cross(next);
    let bend = normal.length().atan2(bone.dot(next));
    let z = rot * DVec3::Z;
    let mut twist = z.cross(normal).dot(bone).atan2(z.dot(normal));
    if twist > FRAC_PI_2 {
        twist -= PI;
    } else if twist < -FRAC_PI_2 {
        twist += PI;
    }
    let u = ((bend.to_degrees() - 5.0) / 15.0).clamp(0.0, 1.0);
    let rot = DQuat::from_axis_angle(bone, u * u * (3.0 - 2.0 * u) * twist) * rot;
    let z = rot * DVec3::Z;
    (rot, z.dot(bone.cross(next)).atan2(bone.dot(next)))
}

/// Per side (right, then left), the joint of each entry of [`NAMES`] in `bvh`.
fn find_joints(bvh: &Bvh, path: &str) -> Result<[[usize; 9]; 2]> {
    let find = |entry: usize, side: usize| -> Option<usize> {
        let sides: &[&str] = if side == 0 {
            &["right", "r"]
        } else {
            &["left", "l"]
        };
        NAMES[entry].1.iter().find_map(|n| {
            sides.iter().find_map(|s| {
                let want = canonical(&n.replace('*', s));
                bvh.joints
                    .iter()
                    .position(|j| !j.end_site && canonical(&j.name) == want)
            })
        })
    };
    let end_site_of = |j: usize| {
        bvh.joints
            .iter()
            .position(|c| c.end_site && c.parent == Some(j))
    };
    let missing = |entry: usize, side: usize| {
        let (what, names) = NAMES[entry];
        let (side, what) = match (entry >= NECK, side) {
            (true, _) => ("", what.to_string()),
            (false, 0) => ("Right", format!("right {what}")),
            (false, _) => ("Left", format!("left {what}")),
        };
        let spelled: Vec<String> = names.iter().map(|n| n.replace('*', side)).collect();
        let has: Vec<&str> = bvh
            .joints
            .iter()
            .filter(|j| !j.end_site)
            .map(|j| j.name.as_str())
            .collect();
        Error::Config(format!(
            "motion clip {path}: no joint for the {what}: looked for {} (any case, R/L for \
             Right/Left); the file has {}. Rename the joint in the HIERARCHY",
            spelled.join(", "),
            has.join(", ")
        ))
    };
    let mut joints = [[0; 9]; 2];
    for side in 0..2 {
        for entry in 0..NAMES.len() {
            let fallback = match entry {
                TOE => Some(ANKLE),
                WRIST => Some(ELBOW),
                HEAD => Some(NECK),
                _ => None,
            };
            joints[side][entry] = find(entry, side)
                .or_else(|| fallback.and_then(|f| end_site_of(joints[side][f])))
                .ok_or_else(|| missing(entry, side))?;
        }
    }
    Ok(joints)
}

impl Retarget {
    fn new(bvh: &Bvh, path: &str, scale: Option<f64>) -> Result<Self> {
        let bad = |msg: String| Error::Config(format!("motion clip {path}: {msg}"));
        let joints = find_joints(bvh, path)?;
        let (rest, _) = bvh.pose(None);
        let name = |j: usize| match bvh.joints[j].parent {
            Some(p) if bvh.joints[j].end_site => format!("the End Site of {}", bvh.joints[p].name),
            _ => bvh.joints[j].name.clone(),
        };
        let bone = |a: usize, b: usize| -> Result<DVec3> {
            let d = rest[b] - rest[a];
            d.try_normalize().ok_or_else(|| {
                bad(format!(
                    "the rest pose (the OFFSETs) puts {} and {} at the same place; the engine \
                     needs the direction between them",
                    name(a),
                    name(b)
                ))
            })
        };
        let [right, left] = joints;
        // Every direction the engine reads must exist at rest (rotations keep it so).
        bone(left[SHOULDER], right[SHOULDER])?;
        bone(right[NECK], right[HEAD])?;
        for s in &joints {
            for (a, b) in [
                (HIP, KNEE),
                (KNEE, ANKLE),
                (ANKLE, TOE),
                (SHOULDER, ELBOW),
                (ELBOW, WRIST),
            ] {
                bone(s[a], s[b])?;
            }
        }
        let lateral = bone(left[HIP], right[HIP])?;
        let hip_mid = 0.5 * (rest[right[HIP]] + rest[left[HIP]]);
        let to_neck = rest[right[NECK]] - hip_mid;
        // Up: the world axis nearest the rest pose's hips-to-neck direction.
        let k = to_neck.abs().max_position();
        let mut up = DVec3::ZERO;
        up[k] = to_neck[k].signum();
        let level = lateral - up * lateral.dot(up);
        if to_neck.length() == 0.0 || level.length() < 1e-6 {
            return Err(bad(
                "the rest pose's hips are not side by side under the neck; the engine needs \
                 an upright rest pose to tell up and forward"
                    .into(),
            ));
        }
        let align = frame(up, level, true).conjugate();
        // The chest point: on the spine (the neck's ancestors, root first) at the engine's
        // chest height, measured along the hips-to-neck direction.
        let mut spine = vec![right[NECK]];
        while let Some(p) = spine.last().and_then(|&j| bvh.joints[j].parent) {
            spine.push(p);
        }
        spine.reverse();
        let height = |j: usize| (rest[j] - hip_mid).dot(to_neck) / to_neck.length_squared();
        let f = chest_fraction();
        let chest = spine
            .windows(2)
            .find(|w| height(w[0]) <= f && f <= height(w[1]))
            .map_or((spine[0], spine[0], 0.0), |w| {
                let (a, b) = (height(w[0]), height(w[1]));
                let t = if b > a { (f - a) / (b - a) } else { 0.0 };
                (w[0], w[1], t)
            });
        if (rest[right[NECK]] - rest[chest.0].lerp(rest[chest.1], chest.2))
            .try_normalize()
            .is_none()
        {
            return Err(bad(format!(
                "the rest pose has no spine below {}: the engine's chest needs one",
                name(right[NECK])
            )));
        }
        let leg = |s: &[usize; 9]| {
            (rest[s[KNEE]] - rest[s[HIP]]).length() + (rest[s[ANKLE]] - rest[s[KNEE]]).length()
        };
        let scale = match scale {
            Some(s) if s.is_finite() && s > 0.0 => s,
            Some(s) => {
                return Err(bad(format!(
                    "the scale must be a positive number of metres per BVH unit, got {s}"
                )))
            }
            None => {
                let engine = THIGH_OFFSET.length() + SHIN_OFFSET.length();
                let s = 2.0 * engine / (leg(&right) + leg(&left));
                if !(s.is_finite() && s > 0.0) {
                    return Err(bad(
                        "the rest pose's legs have no length to take the scale from".into(),
                    ));
                }
                s
            }
        };
        let mut calibration = [[DQuat::IDENTITY; 3]; 2];
        for (c, s) in calibration.iter_mut().zip([&right, &left]) {
            let least = |local: DVec3, a: usize, b: usize| -> Result<DQuat> {
                Ok(DQuat::from_rotation_arc(
                    local.normalize(),
                    align * bone(a, b)?,
                ))
            };
            *c = [
                least(THIGH_OFFSET, s[HIP], s[KNEE])?,
                least(TOE_OFFSET, s[ANKLE], s[TOE])?,
                least(UPPER_ARM_OFFSET, s[SHOULDER], s[ELBOW])?,
            ];
        }
        Ok(Self {
            joints,
            chest,
            align,
            scale,
            calibration,
        })
    }

    /// The engine pose of frame `f` (before grounding).
    fn pose(&self, bvh: &Bvh, f: usize) -> Pose {
        let (pos, rot) = bvh.pose(Some(f));
        let p = |j: usize| self.align * pos[j] * self.scale;
        let world = |j: usize| self.align * rot[j] * self.align.conjugate();
        let [right, left] = self.joints;
        let hip_mid = 0.5 * (p(right[HIP]) + p(left[HIP]));
        let (a, b, w) = self.chest;
        let chest = p(a).lerp(p(b), w);
        let neck = p(right[NECK]);
        let root_rot = frame(chest - hip_mid, p(right[HIP]) - p(left[HIP]), true);
        let chest_rot = frame(neck - chest, p(right[SHOULDER]) - p(left[SHOULDER]), false);
        let head = aim(chest_rot, DVec3::Y, p(right[HEAD]) - neck);
        let mut joints = [DQuat::IDENTITY; 12];
        joints[0] = root_rot.conjugate() * chest_rot;
        joints[1] = chest_rot.conjugate() * head;
        for (s, (side, c)) in self.joints.iter().zip(&self.calibration).enumerate() {
            let dir = |from: usize, to: usize| p(side[to]) - p(side[from]);
            let thigh = aim(world(side[HIP]) * c[0], THIGH_OFFSET, dir(HIP, KNEE));
            let (thigh, knee) = hinge(thigh, dir(KNEE, ANKLE));
            let shin = thigh * DQuat::from_rotation_z(knee);
            let foot = aim(world(side[ANKLE]) * c[1], TOE_OFFSET, dir(ANKLE, TOE));
            let arm = aim(
                world(side[SHOULDER]) * c[2],
                UPPER_ARM_OFFSET,
                dir(SHOULDER, ELBOW),
            );
            let (arm, elbow) = hinge(arm, dir(ELBOW, WRIST));
            let b = 2 + 5 * s;
            joints[b] = root_rot.conjugate() * thigh;
            joints[b + 1] = DQuat::from_rotation_z(knee);
            joints[b + 2] = shin.conjugate() * foot;
            joints[b + 3] = chest_rot.conjugate() * arm;
            joints[b + 4] = DQuat::from_rotation_z(elbow);
        }
        Pose {
            root: hip_mid,
            root_rot,
            joints,
        }
    }
}

impl Clip {
    /// Reads a BVH file onto the engine's skeleton (the method is in the [`super::bvh`]
    /// module's documentation); `path` names the file in errors. `scale` is metres per
    /// BVH unit (0.01 for centimetres; CMU's conversions use about 0.056); `None` takes
    /// it from the rest pose, scaling the legs to the engine's.
    pub fn from_bvh(text: &str, path: &str, scale: Option<f64>) -> Result<Self> {
        let bvh = Bvh::parse(text, path)?;
        let map = Retarget::new(&bvh, path, scale)?;
        let mut poses: Vec<Pose> = (0..bvh.frames()).map(|f| map.pose(&bvh, f)).collect();
        let mut ground = f64::INFINITY;
        for (pose, line) in poses.iter().zip(&bvh.row_lines) {
            let points = pose.points();
            let finite = points.iter().all(|x| x.is_finite())
                && pose.joints.iter().all(|q| q.is_finite())
                && pose.root_rot.is_finite();
            if !finite {
                return Err(at_line(
                    path,
                    *line,
                    "this frame gives no finite pose: values too large, or joints the engine \
                     needs at one place",
                ));
            }
            ground = points.iter().map(|x| x.y).fold(ground, f64::min);
        }
        for (pose, line) in poses.iter_mut().zip(&bvh.row_lines) {
            pose.root.y -= ground;
            // Extreme but finite heights can overflow once grounded.
            if !pose.root.y.is_finite() {
                return Err(at_line(
                    path,
                    *line,
                    "this frame's height is too far from the clip's lowest point to represent",
                ));
            }
        }
        Self {
            name: path.to_string(),
            durations: vec![bvh.frame_time; poses.len()],
            poses,
            looping: false,
        }
        .with_finite_span(path)
    }

    /// The clip as BVH on the engine's own skeleton, for other tools and for testing the
    /// loader: centimetres and degrees, Y up, facing +x at rest; ball joints as Zrotation
    /// Xrotation Yrotation, knees and elbows one Zrotation. Toes, wrists and the head are
    /// End Sites; heels follow the feet. BVH has one frame time, so a clip whose frames
    /// differ in duration is resampled at their mean.
    pub fn to_bvh(&self) -> String {
        let n = self.poses.len();
        let dt = self.duration() / (n - 1) as f64;
        let skeleton = export_skeleton();
        let mut text = String::from("HIERARCHY\n");
        let mut order = Vec::new();
        write_joint(&skeleton, 0, 0, &mut text, &mut order);
        let _ = write!(text, "MOTION\nFrames: {n}\nFrame Time: {dt:.9}\n");
        for k in 0..n {
            let pose = self.sample(k as f64 * dt);
            let mut row = Vec::new();
            for &j in &order {
                match skeleton[j].3 {
                    Dof::Root => {
                        row.extend((pose.root * 100.0).to_array());
                        row.extend(euler(pose.root_rot));
                    }
                    Dof::Ball(q) => row.extend(euler(pose.joints[q])),
                    Dof::Hinge(q) => row.push(hinge_angle(pose.joints[q]).to_degrees()),
                    Dof::End => {}
                }
            }
            let row: Vec<String> = row.iter().map(|v| format!("{v:.6}")).collect();
            text.push_str(&row.join(" "));
            text.push('\n');
        }
        text
    }
}

/// How an exported joint moves: the root, a joint of [`super::body::JOINTS`] as a ball
/// or a hinge, or not at all (End Site).
#[derive(Clone, Copy)]
enum Dof {
    Root,
    Ball(usize),
    Hinge(usize),
    End,
}

/// The engine's skeleton as BVH joints: name, parent, offset (m), degrees of freedom.
fn export_skeleton() -> Vec<(&'static str, Option<usize>, DVec3, Dof)> {
    let mut s = vec![
        ("Hips", None, DVec3::ZERO, Dof::Root),
        ("Spine", Some(0), CHEST_OFFSET, Dof::Ball(0)),
        ("Neck", Some(1), NECK_OFFSET, Dof::Ball(1)),
        ("End Site", Some(2), HEAD_OFFSET, Dof::End),
    ];
    for (side, names, sign) in [
        (
            0,
            [
                "RightUpLeg",
                "RightLeg",
                "RightFoot",
                "RightArm",
                "RightForeArm",
            ],
            1.0,
        ),
        (
            1,
            ["LeftUpLeg", "LeftLeg", "LeftFoot", "LeftArm", "LeftForeArm"],
            -1.0,
        ),
    ] {
        let b = 2 + 5 * side;
        let at = s.len();
        s.extend([
            (names[0], Some(0), mirrored(HIP_OFFSET, sign), Dof::Ball(b)),
            (names[1], Some(at), THIGH_OFFSET, Dof::Hinge(b + 1)),
            (names[2], Some(at + 1), SHIN_OFFSET, Dof::Ball(b + 2)),
            ("End Site", Some(at + 2), TOE_OFFSET, Dof::End),
            (
                names[3],
                Some(1),
                mirrored(SHOULDER_OFFSET, sign),
                Dof::Ball(b + 3),
            ),
            (names[4], Some(at + 4), UPPER_ARM_OFFSET, Dof::Hinge(b + 4)),
            ("End Site", Some(at + 5), FOREARM_OFFSET, Dof::End),
        ]);
    }
    s
}

/// Writes joint `j` and its subtree, and appends the joints in the order their channels
/// take in a row.
fn write_joint(
    skeleton: &[(&str, Option<usize>, DVec3, Dof)],
    j: usize,
    depth: usize,
    text: &mut String,
    order: &mut Vec<usize>,
) {
    let (name, parent, offset, dof) = skeleton[j];
    let pad = "  ".repeat(depth);
    let o = offset * 100.0;
    let head = match (parent, dof) {
        (None, _) => format!("ROOT {name}"),
        (_, Dof::End) => name.to_string(),
        _ => format!("JOINT {name}"),
    };
    let _ = write!(
        text,
        "{pad}{head}\n{pad}{{\n{pad}  OFFSET {:.6} {:.6} {:.6}\n",
        o.x, o.y, o.z
    );
    let channels = match dof {
        Dof::Root => "6 Xposition Yposition Zposition Zrotation Xrotation Yrotation",
        Dof::Ball(_) => "3 Zrotation Xrotation Yrotation",
        Dof::Hinge(_) => "1 Zrotation",
        Dof::End => "",
    };
    if !channels.is_empty() {
        let _ = writeln!(text, "{pad}  CHANNELS {channels}");
    }
    order.push(j);
    for c in (0..skeleton.len()).filter(|&c| skeleton[c].1 == Some(j)) {
        write_joint(skeleton, c, depth + 1, text, order);
    }
    let _ = writeln!(text, "{pad}}}");
}

/// Z, X, Y angles (degrees) with q = Rz Rx Ry, the order of the exported channels.
fn euler(q: DQuat) -> [f64; 3] {
    let (z, x, y) = q.to_euler(EulerRot::ZXY);
    [z.to_degrees(), x.to_degrees(), y.to_degrees()]
}
