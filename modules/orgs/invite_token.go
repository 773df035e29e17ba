package orgs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/mail"
	"net/url"
	"strings"

	"github.com/google/uuid"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/nxmesh/nxmesh/app"
	"github.com/nxmesh/nxmesh/app/authz"
	"github.com/nxmesh/nxmesh/modules/auth"
)

// Invitations of an e-mail address without an account.
//
//  1. InviteMember finds no account for the address: inviteByEmail stores the
//     invitation with the address and the SHA-256 of a random single-use
//     token, valid InvitationTTL.
//  2. After the commit the link (http.public_url + /invitations/accept?token=…)
//     is mailed to the address; when smtp.* is not configured or the server
//     refuses, the link is answered once (Invitation.AcceptURL) for the
//     inviter to pass on. Only the hash is stored: the link cannot be shown
//     again.
//  3. AcceptInvitationToken: whoever holds the token sets a password (the
//     password policy applies) and, in one transaction, the account is
//     created, the invitation is accepted, its token cleared, and the account
//     becomes a member with the invitation's role.

// AcceptInvitationPath is the admin page an invitation link opens.
const AcceptInvitationPath = "/invitations/accept"

// maxEmailLength bounds an invited address.
const maxEmailLength = 254

// ErrInvitationLinkInvalid refuses an unknown, used, revoked or expired
// invitation link.
var ErrInvitationLinkInvalid = fmt.Errorf("%w: this invitation link is not valid: it was used, revoked or has expired; ask for a new one", app.ErrNotFound)

func invitationTokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func newInvitationToken() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("invitation token: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// acceptURL is the invitation link of token.
func (s *Service) acceptURL(token string) string {
	return strings.TrimRight(s.publicURL, "/") + AcceptInvitationPath + "?token=" + url.QueryEscape(token)
}

// inviteByEmail stores the invitation of an address without an account in tx
// (see above); the returned invitation's AcceptURL holds the link until
// mailInvitation decides whether to answer it.
func (s *Service) inviteByEmail(ctx context.Context, tx *gorm.DB, p AddMemberParams) (Invitation, error) {
	email := strings.ToLower(p.Email)
	v := &app.Validator{}
	if a, err := mail.ParseAddress(email); err != nil || a.Address != email || a.Name != "" || len(email) > maxEmailLength {
		v.Add("email", app.FieldInvalidFormat, "must be an email address")
	}
	if err := v.Err(); err != nil {
		return Invitation{}, err
	}
	now := s.clock().UTC()
	if err := tx.Model(&invitationRow{}).
		Where("organization_id = ? AND user_id IS NULL AND lower(email) = ? AND status = ? AND expires_at <= ?", p.OrgID, email, InvitationPending, now).
		Updates(map[string]any{"status": InvitationExpired, "token_hash": nil}).Error; err != nil {
		return Invitation{}, fmt.Errorf("expire old invitations of %q: %w", email, err)
	}
	token, err := newInvitationToken()
	if err != nil {
		return Invitation{}, err
	}
	row := invitationRow{
		ID: uuid.New(), OrganizationID: p.OrgID, Email: email, TokenHash: invitationTokenHash(token), Role: p.Role,
		Status: InvitationPending, CreatedAt: now, ExpiresAt: now.Add(InvitationTTL),
	}
	if pr := app.PrincipalFrom(ctx); pr != nil {
		row.InvitedBy = &pr.UserID
	}
	if err := tx.Create(&row).Error; err != nil {
		if app.IsUniqueViolation(err) {
			return Invitation{}, fmt.Errorf("invite %q: %w", email, ErrAlreadyInvited)
		}
		return Invitation{}, fmt.Errorf("invite %q: %w", email, err)
	}
	inv, err := loadInvitation(tx, row.ID)
	if err != nil {
		return Invitation{}, err
	}
	if err := app.Audit(ctx, tx, app.AuditParams{
		OrgID: p.OrgID, Action: "invitation.create", ObjectType: ObjectInvitation, ObjectID: inv.ID.String(), After: inv,
	}); err != nil {
		return Invitation{}, err
	}
	inv.AcceptURL = s.acceptURL(token)
	return inv, nil
}

// mailInvitation mails inv's link to the invitee; when that works it clears
// AcceptURL and sets Mailed, else the link stays for the inviter (the failure
// is logged).
func (s *Service) mailInvitation(ctx context.Context, inv *Invitation) {
	if s.mailer == nil || !s.mailer.Configured() {
		return
	}
	inviter := inv.InvitedByEmail
	if inviter == "" {
		inviter = "An administrator"
	}
	body := fmt.Sprintf("%s invites you to the organization %q on NxMesh as %s.\n\n"+
		"Open this link to choose your password and join:\n%s\n\n"+
		"The link works once and expires on %s.\n"+
		"If you did not expect this invitation, ignore this message.\n",
		inviter, inv.OrganizationName, inv.Role, inv.AcceptURL, inv.ExpiresAt.UTC().Format("2006-01-02 15:04 UTC"))
	if err := s.mailer.Send(ctx, inv.Email, "Invitation to "+inv.OrganizationName+" on NxMesh", body); err != nil {
		s.logger.ErrorContext(ctx, "send invitation", "invitation_id", inv.ID, "error", err)
		return
	}
	inv.AcceptURL, inv.Mailed = "", true
}

// lockInvitationByToken reads, for update in tx, the pending unexpired
// invitation of an address without an account whose token is token.
func lockInvitationByToken(tx *gorm.DB, token string) (invitationRow, error) {
	var row invitationRow
	err := tx.Clauses(clause.Locking{Strength: clause.LockingStrengthUpdate}).
		Where("token_hash = ? AND user_id IS NULL AND status = ? AND expires_at > now()", invitationTokenHash(token), InvitationPending).
		Take(&row).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return row, ErrInvitationLinkInvalid
	}
	if err != nil {
		return row, fmt.Errorf("find invitation by token: %w", err)
	}
	return row, nil
}

func checkToken(token string) error {
	v := &app.Validator{}
	if v.Check(token != "", "token", app.FieldRequired, "is required") {
		v.Check(len(token) <= 128, "token", app.FieldTooLong, "must be at most 128 characters")
	}
	return v.Err()
}

// InvitationByToken returns the pending invitation of the link's token, to
// show on its page (ErrInvitationLinkInvalid when it cannot be used).
func (s *Service) InvitationByToken(ctx context.Context, token string) (Invitation, error) {
	if err := checkToken(token); err != nil {
		return Invitation{}, err
	}
	var inv Invitation
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		row, err := lockInvitationByToken(tx, token)
		if err != nil {
			return err
		}
		inv, err = loadInvitation(tx, row.ID)
		return err
	})
	return inv, err
}

// AcceptInvitationTokenParams answer an invitation link.
type AcceptInvitationTokenParams struct {
	Token    string
	Name     string
	Password string
}

// AcceptInvitationToken creates the invitee's account with the password
// (password policy), accepts the invitation and makes the account a member
// with its role, all in one transaction; the token then no longer works. An
// unknown, used, revoked or expired token is ErrInvitationLinkInvalid; an
// inviter who may no longer grant the role makes it ErrInvitationStale; an
// address that got an account meanwhile is a 409.
func (s *Service) AcceptInvitationToken(ctx context.Context, p AcceptInvitationTokenParams) (Invitation, error) {
	if err := checkToken(p.Token); err != nil {
		return Invitation{}, err
	}
	if s.keys == nil {
		return Invitation{}, fmt.Errorf("accept invitation: %w: accounts are not available", app.ErrUnavailable)
	}
	var inv Invitation
	err := s.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var orgIDs []uuid.UUID
		if err := tx.Model(&invitationRow{}).Where("token_hash = ?", invitationTokenHash(p.Token)).Limit(1).
			Pluck("organization_id", &orgIDs).Error; err != nil {
			return fmt.Errorf("find invitation by token: %w", err)
		}
		if len(orgIDs) == 0 {
			return ErrInvitationLinkInvalid
		}
		if _, err := lockOrganization(tx, orgIDs[0]); err != nil {
			return err
		}
		row, err := lockInvitationByToken(tx, p.Token)
		if err != nil {
			return err
		}
		if err := auth.CheckNewPassword("password", p.Password, row.Email); err != nil {
			return err
		}
		if row.InvitedBy != nil {
			granter, err := userRoleIn(tx, *row.InvitedBy, row.OrganizationID)
			if err != nil {
				return err
			}
			if authz.RoleRank(granter) < authz.RoleRank(authz.RoleAdmin) || authz.RoleRank(row.Role) > authz.RoleRank(granter) {
				return ErrInvitationStale
			}
		}
		before, err := loadInvitation(tx, row.ID)
		if err != nil {
			return err
		}
		u, err := s.keys.CreateUserIn(ctx, tx, auth.CreateUserParams{Email: row.Email, Name: p.Name, Password: p.Password})
		if err != nil {
			return err
		}
		if err := tx.Model(&invitationRow{}).Where("id = ?", row.ID).Updates(map[string]any{
			"status": InvitationAccepted, "responded_at": s.clock().UTC(), "user_id": u.ID, "token_hash": nil,
		}).Error; err != nil {
			return fmt.Errorf("accept invitation %s: %w", row.ID, err)
		}
		if inv, err = loadInvitation(tx, row.ID); err != nil {
			return err
		}
		if err := app.Audit(ctx, tx, app.AuditParams{
			OrgID: row.OrganizationID, Action: "invitation.accept", ObjectType: ObjectInvitation,
			ObjectID: row.ID.String(), Before: before, After: inv,
		}); err != nil {
			return err
		}
		_, err = insertMember(ctx, tx, row.OrganizationID, u.ID, row.Role)
		return err
	})
	if err != nil {
		return Invitation{}, err
	}
	return inv, nil
}
