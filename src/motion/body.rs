//! The articulated point-mass body of docs/DESIGN.md §5: 19 point masses (joint centres and
//! end effectors) on the skeleton of the DeepMimic humanoid (y up, x forward, z right),
//! bones and bracing as stiff damped springs, joints as PD terms towards target values
//! of smooth angle measures, and a residual root controller.
//!
//! Every force is one [`Term`]: a scalar measure q(x) of a few points (a length, the
//! cosine between two body vectors, a signed triple product, a coordinate), a target q*
//! (fixed, or one control channel), and gains: F = −(kp (q − q*) + kd q̇) ∇q. One piece
//! of math thus serves bones, joints and the root, on the GPU and in the CPU twin.

use glam::{DQuat, DVec3};

/// Point names, in buffer order.
pub const POINTS: [&str; 19] = [
    "chest",
    "neck",
    "head",
    "right_shoulder",
    "right_elbow",
    "right_wrist",
    "left_shoulder",
    "left_elbow",
    "left_wrist",
    "right_hip",
    "right_knee",
    "right_ankle",
    "right_toe",
    "right_heel",
    "left_hip",
    "left_knee",
    "left_ankle",
    "left_toe",
    "left_heel",
];
pub const N_POINTS: usize = POINTS.len();

pub(crate) const CHEST: usize = 0;
const NECK: usize = 1;
const HEAD: usize = 2;
const R_SHOULDER: usize = 3;
const R_ELBOW: usize = 4;
const R_WRIST: usize = 5;
const L_SHOULDER: usize = 6;
const L_ELBOW: usize = 7;
const L_WRIST: usize = 8;
pub(crate) const R_HIP: usize = 9;
const R_KNEE: usize = 10;
const R_ANKLE: usize = 11;
const R_TOE: usize = 12;
const R_HEEL: usize = 13;
pub(crate) const L_HIP: usize = 14;
const L_KNEE: usize = 15;
const L_ANKLE: usize = 16;
const L_TOE: usize = 17;
const L_HEEL: usize = 18;

/// Masses in kg (70 kg in all); feet and hands are kept heavy enough for the explicit
/// integrator's friction and bone springs at the default time step.
const MASSES: [f64; N_POINTS] = [
    12.0, 5.0, 5.0, 3.5, 1.5, 1.0, 3.5, 1.5, 1.0, 8.0, 4.5, 1.5, 1.5, 1.5, 8.0, 4.5, 1.5, 1.5, 1.5,
];

/// A body vector: x\[to\] − x\[from\], or a fixed world axis (for the root controller).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Vector {
    Points { from: usize, to: usize },
    Axis(usize),
}

const fn pv(from: usize, to: usize) -> Vector {
    Vector::Points { from, to }
}

/// The scalar measures a term acts on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Measure {
    /// |u|: bones and bracing springs.
    Length(Vector),
    /// û·v̂: joint angles, smooth everywhere (also at a straight knee).
    Cos(Vector, Vector),
    /// (û × v̂)·ŵ: the signed component that tells forward from backward.
    Triple(Vector, Vector, Vector),
    /// Coordinate `axis` of the midpoint of two points: the root position.
    Midpoint { a: usize, b: usize, axis: usize },
}

/// Where a term's target comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    Fixed(f64),
    /// Control channel c, interpolated between keyframes.
    Channel(usize),
}

/// One force term: F = −(kp (q − q*) + kd q̇) ∇q.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Term {
    pub measure: Measure,
    pub target: Target,
    pub kp: f64,
    pub kd: f64,
}

/// Stiffness of the body's parts.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Gains {
    /// Natural frequency (rad/s) and damping ratio of every bone spring.
    pub bone_omega: f64,
    pub bone_zeta: f64,
    /// PD stiffness (N·m per unit of the measure) of legs and spine, ankles, arms, neck.
    pub legs: f64,
    pub feet: f64,
    pub arms: f64,
    pub neck: f64,
    /// Derivative gain as a multiple of the stiffness (s).
    pub damping_time: f64,
    /// Residual root controller: position (N/m) and orientation (N·m) stiffness.
    pub root_position: f64,
    pub root_orientation: f64,
}

impl Default for Gains {
    fn default() -> Self {
        Self {
            bone_omega: 300.0,
            bone_zeta: 0.3,
            legs: 1600.0,
            feet: 600.0,
            arms: 480.0,
            neck: 320.0,
            damping_time: 0.005,
            root_position: 300_000.0,
            root_orientation: 9000.0,
        }
    }
}

/// The body: masses, rest pose, force terms and control channels.
#[derive(Clone, Debug)]
pub struct Body {
    pub masses: Vec<f64>,
    pub terms: Vec<Term>,
    /// One name per control channel, in parameter order.
    pub channels: Vec<String>,
}

/// The joint-angle measures that PD targets drive, with their gain group.
fn joint_measures() -> Vec<(String, Measure, Group)> {
    use Measure::*;
    use Vector::Axis;
    let lat_l = pv(R_HIP, L_HIP);
    let up_l = pv(R_HIP, CHEST);
    let up_u = pv(CHEST, NECK);
    let lat_u = pv(R_SHOULDER, L_SHOULDER);
    let head = pv(NECK, HEAD);
    let mut m: Vec<(String, Measure, Group)> = [
        ("spine_side", Cos(up_u, lat_l), Group::Legs),
        ("spine_bend", Cos(up_u, up_l), Group::Legs),
        ("spine_forward", Triple(lat_l, up_l, up_u), Group::Legs),
        ("spine_twist", Triple(lat_l, up_l, lat_u), Group::Legs),
        ("neck_side", Cos(head, lat_u), Group::Neck),
        ("neck_forward", Triple(lat_u, up_u, head), Group::Neck),
    ]
    .into_iter()
    .map(|(n, m, g)| (n.to_string(), m, g))
    .collect();
    for (side, hip, knee, ankle, toe, heel, sh, elbow, wrist) in [
        (
            "right", R_HIP, R_KNEE, R_ANKLE, R_TOE, R_HEEL, R_SHOULDER, R_ELBOW, R_WRIST,
        ),
        (
            "left", L_HIP, L_KNEE, L_ANKLE, L_TOE, L_HEEL, L_SHOULDER, L_ELBOW, L_WRIST,
        ),
    ] {
        let thigh = pv(hip, knee);
        let shin = pv(knee, ankle);
        let foot = pv(heel, toe);
        let arm = pv(sh, elbow);
        let names = |j: &str| format!("{side}_{j}");
        m.extend([
            (names("hip_side"), Cos(thigh, lat_l), Group::Legs),
            (
                names("hip_forward"),
                Triple(lat_l, up_l, thigh),
                Group::Legs,
            ),
            (names("knee"), Cos(thigh, shin), Group::Legs),
            (
                names("knee_forward"),
                Triple(lat_l, thigh, shin),
                Group::Legs,
            ),
            (names("knee_side"), Cos(shin, lat_l), Group::Legs),
            (names("ankle"), Cos(foot, shin), Group::Feet),
            (names("ankle_side"), Cos(foot, lat_l), Group::Feet),
            (
                names("ankle_roll"),
                Cos(pv(heel, ankle), lat_l),
                Group::Feet,
            ),
            (names("shoulder_side"), Cos(arm, lat_u), Group::Arms),
            (names("shoulder_up"), Cos(arm, up_u), Group::Arms),
            (
                names("shoulder_forward"),
                Triple(lat_u, up_u, arm),
                Group::Arms,
            ),
            (names("elbow"), Cos(arm, pv(elbow, wrist)), Group::Arms),
        ]);
    }
    for (name, measure) in [
        ("root_lateral_x", Cos(lat_l, Axis(0))),
        ("root_lateral_y", Cos(lat_l, Axis(1))),
        ("root_lateral_z", Cos(lat_l, Axis(2))),
        ("root_up_x", Cos(up_l, Axis(0))),
        ("root_up_z", Cos(up_l, Axis(2))),
    ] {
        m.push((name.to_string(), measure, Group::RootOrientation));
    }
    for (axis, name) in ["root_x", "root_y", "root_z"].into_iter().enumerate() {
        m.push((
            name.to_string(),
            Midpoint {
                a: R_HIP,
                b: L_HIP,
                axis,
            },
            Group::RootPosition,
        ));
    }
    m
}

#[derive(Clone, Copy)]
enum Group {
    Legs,
    Feet,
    Arms,
    Neck,
    RootOrientation,
    RootPosition,
}

/// Bones and bracing springs: each foot and each half of the torso is a rigid truss.
pub const SPRINGS: [(usize, usize); 24] = [
    (R_HIP, L_HIP),
    (R_HIP, CHEST),
    (L_HIP, CHEST),
    (CHEST, NECK),
    (CHEST, R_SHOULDER),
    (CHEST, L_SHOULDER),
    (NECK, R_SHOULDER),
    (NECK, L_SHOULDER),
    (R_SHOULDER, L_SHOULDER),
    (NECK, HEAD),
    (R_SHOULDER, R_ELBOW),
    (R_ELBOW, R_WRIST),
    (L_SHOULDER, L_ELBOW),
    (L_ELBOW, L_WRIST),
    (R_HIP, R_KNEE),
    (R_KNEE, R_ANKLE),
    (L_HIP, L_KNEE),
    (L_KNEE, L_ANKLE),
    (R_ANKLE, R_TOE),
    (R_ANKLE, R_HEEL),
    (R_TOE, R_HEEL),
    (L_ANKLE, L_TOE),
    (L_ANKLE, L_HEEL),
    (L_TOE, L_HEEL),
];

impl Body {
    /// The default body with `gains`; bone rest lengths from the neutral pose.
    pub fn new(gains: &Gains) -> Self {
        let rest = Pose::neutral().points();
        let mut terms = Vec::new();
        for &(a, b) in &SPRINGS {
            let mu = MASSES[a] * MASSES[b] / (MASSES[a] + MASSES[b]);
            terms.push(Term {
                measure: Measure::Length(pv(a, b)),
                target: Target::Fixed((rest[b] - rest[a]).length()),
                kp: mu * gains.bone_omega * gains.bone_omega,
                kd: 2.0 * gains.bone_zeta * mu * gains.bone_omega,
            });
        }
        let mut channels = Vec::new();
        for (c, (name, measure, group)) in joint_measures().into_iter().enumerate() {
            let kp = match group {
                Group::Legs => gains.legs,
                Group::Feet => gains.feet,
                Group::Arms => gains.arms,
                Group::Neck => gains.neck,
                Group::RootOrientation => gains.root_orientation,
                Group::RootPosition => gains.root_position,
            };
            terms.push(Term {
                measure,
                target: Target::Channel(c),
                kp,
                kd: kp * gains.damping_time,
            });
            channels.push(name);
        }
        Self {
            masses: MASSES.to_vec(),
            terms,
            channels,
        }
    }

    pub fn n_channels(&self) -> usize {
        self.channels.len()
    }

    /// Every channel's value at the point positions `x`: the PD targets that hold `x`.
    pub fn channel_values(&self, x: &[DVec3]) -> Vec<f64> {
        let mut out = vec![0.0; self.n_channels()];
        for t in &self.terms {
            if let Target::Channel(c) = t.target {
                out[c] = super::measure::value(&t.measure, x);
            }
        }
        out
    }
}

/// DeepMimic joints in clip order: chest, neck, right hip, knee, ankle, shoulder, elbow,
/// then the left side. Knees and elbows are rotations about z.
pub const JOINTS: [&str; 12] = [
    "chest",
    "neck",
    "right_hip",
    "right_knee",
    "right_ankle",
    "right_shoulder",
    "right_elbow",
    "left_hip",
    "left_knee",
    "left_ankle",
    "left_shoulder",
    "left_elbow",
];

/// A kinematic pose on the DeepMimic skeleton: root position and orientation, and the
/// local rotation of every joint of [`JOINTS`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    pub root: DVec3,
    pub root_rot: DQuat,
    pub joints: [DQuat; 12],
}

/// Height of the root over the ground in the neutral pose (feet flat).
pub const ROOT_HEIGHT: f64 = -(THIGH_OFFSET.y + SHIN_OFFSET.y + TOE_OFFSET.y);

/// Segment offsets of the DeepMimic humanoid (m), each in its parent segment's frame,
/// the right side's (z > 0; [`mirrored`] on the left): shared by the forward kinematics,
/// the BVH export and the BVH retargeting.
pub const CHEST_OFFSET: DVec3 = DVec3::new(0.0, 0.236151, 0.0);
pub const NECK_OFFSET: DVec3 = DVec3::new(0.0, 0.223894, 0.0);
pub const HEAD_OFFSET: DVec3 = DVec3::new(0.0, 0.2, 0.0);
pub const SHOULDER_OFFSET: DVec3 = DVec3::new(-0.02405, 0.2435, 0.18311);
pub const UPPER_ARM_OFFSET: DVec3 = DVec3::new(0.0, -0.274788, 0.0);
pub const FOREARM_OFFSET: DVec3 = DVec3::new(0.0, -0.258947, 0.0);
pub const HIP_OFFSET: DVec3 = DVec3::new(0.0, 0.0, 0.084887);
pub const THIGH_OFFSET: DVec3 = DVec3::new(0.0, -0.421546, 0.0);
pub const SHIN_OFFSET: DVec3 = DVec3::new(0.0, -0.40987, 0.0);
pub const TOE_OFFSET: DVec3 = DVec3::new(0.16, -0.07, 0.0);
pub const HEEL_OFFSET: DVec3 = DVec3::new(-0.05, -0.07, 0.0);

/// An offset of the right side (`sign` 1) or the left (`sign` −1).
pub fn mirrored(v: DVec3, sign: f64) -> DVec3 {
    DVec3::new(v.x, v.y, sign * v.z)
}

impl Pose {
    /// Standing upright, arms down, facing +x, feet on the ground.
    pub fn neutral() -> Self {
        Self {
            root: DVec3::new(0.0, ROOT_HEIGHT, 0.0),
            root_rot: DQuat::IDENTITY,
            joints: [DQuat::IDENTITY; 12],
        }
    }

    /// This pose with every joint turned by a random rotation of up to `angle` rad about
    /// a random axis (test poses, noisy kinematic estimates).
    pub fn perturbed(&self, rng: &mut impl rand::Rng, angle: f64) -> Self {
        let mut pose = *self;
        for q in pose.joints.iter_mut() {
            let axis = DVec3::new(
                rng.random_range(-1.0..1.0),
                rng.random_range(-1.0..1.0),
                rng.random_range(-1.0..1.0),
            );
            let turn =
                DQuat::from_axis_angle(axis.normalize_or(DVec3::X), rng.random_range(0.0..angle));
            *q = turn * *q;
        }
        pose
    }

    /// Forward kinematics: the 19 body points (segment offsets of the DeepMimic
    /// humanoid; head, toes and heels are the project's end effectors).
    pub fn points(&self) -> [DVec3; N_POINTS] {
        let j = &self.joints;
        let r = self.root_rot;
        let mut p = [DVec3::ZERO; N_POINTS];
        let chest_rot = r * j[0];
        p[CHEST] = self.root + r * CHEST_OFFSET;
        p[NECK] = p[CHEST] + chest_rot * NECK_OFFSET;
        p[HEAD] = p[NECK] + chest_rot * j[1] * HEAD_OFFSET;
        for (s, sign) in [(0usize, 1.0), (1, -1.0)] {
            let (sh, el, wr, hip, knee, ankle, toe, heel) = if s == 0 {
                (
                    R_SHOULDER, R_ELBOW, R_WRIST, R_HIP, R_KNEE, R_ANKLE, R_TOE, R_HEEL,
                )
            } else {
                (
                    L_SHOULDER, L_ELBOW, L_WRIST, L_HIP, L_KNEE, L_ANKLE, L_TOE, L_HEEL,
                )
            };
            let b = 2 + 5 * s;
            let (q_hip, q_knee, q_ankle, q_sh, q_el) =
                (j[b], j[b + 1], j[b + 2], j[b + 3], j[b + 4]);
            p[sh] = p[CHEST] + chest_rot * mirrored(SHOULDER_OFFSET, sign);
            let arm = chest_rot * q_sh;
            p[el] = p[sh] + arm * UPPER_ARM_OFFSET;
            p[wr] = p[el] + arm * q_el * FOREARM_OFFSET;
            p[hip] = self.root + r * mirrored(HIP_OFFSET, sign);
            let thigh = r * q_hip;
            p[knee] = p[hip] + thigh * THIGH_OFFSET;
            let shin = thigh * q_knee;
            p[ankle] = p[knee] + shin * SHIN_OFFSET;
            let foot = shin * q_ankle;
            p[toe] = p[ankle] + foot * TOE_OFFSET;
            p[heel] = p[ankle] + foot * HEEL_OFFSET;
        }
        p
    }
}
