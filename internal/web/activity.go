package web

import (
	"errors"
	"net/http"
	"strings"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

// notificationRow is a notification with its latest deliveries.
type notificationRow struct {
	meta.Notification
	Attempts []meta.Attempt
}

// candidateRow is a gate candidate with its checks.
type candidateRow struct {
	meta.Candidate
	Checks []meta.Check
}

// Caps of the activity page: deliveries per notification, candidates.
const (
	attemptsShown    = 10
	candidatesShown  = 30
	deletedTagsShown = 30
)

// activity shows what the registry's automation does with a repository:
// its mirror and notifications to its admins (as the API), its gate's
// candidates, checks, promotions and rollback tags to those who may check
// them.
func (u *UI) activity(w http.ResponseWriter, r *http.Request, v *visitor, repo string) error {
	return u.activityPage(w, r, v, repo, http.StatusOK, formFlash{})
}

// activityPage renders the activity page, with a refused form's flash.
func (u *UI) activityPage(w http.ResponseWriter, r *http.Request, v *visitor, repo string, status int, flash formFlash) error {
	ctx := r.Context()
	ri, err := u.readable(ctx, v, repo)
	if err != nil {
		return err
	}
	canAdmin, err := u.allowed(ctx, v, repo, auth.ActionAdmin)
	if err != nil {
		return err
	}
	canCheck, err := u.allowed(ctx, v, repo, auth.ActionChecks)
	if err != nil {
		return err
	}
	canWrite, err := u.allowed(ctx, v, repo, auth.ActionWrite)
	if err != nil {
		return err
	}
	data := map[string]any{"Repo": ri, "Path": repoPath(repo), "CanAdmin": canAdmin, "CanCheck": canCheck, "CanWrite": canWrite, "Flash": flash}
	if canWrite {
		deleted, err := u.db.Content.WithTimeMachine(*u.opts.TimeMachine).DeletedTags(ctx, repo, deletedTagsShown)
		if err != nil {
			return err
		}
		data["Deleted"] = deleted
	}
	if canAdmin {
		m, err := u.db.Mirrors.GetMirror(ctx, repo)
		switch {
		case err == nil:
			data["Mirror"] = m
		case !errors.Is(err, meta.ErrNotFound):
			return err
		}
		ns, err := u.db.Notifications.Notifications(ctx, meta.ScopeRepository, repo)
		if err != nil {
			return err
		}
		var rows []notificationRow
		for _, n := range ns {
			at, err := u.db.Notifications.Attempts(ctx, n.ID, attemptsShown)
			if err != nil {
				return err
			}
			rows = append(rows, notificationRow{n, at})
		}
		data["Notifications"] = rows
	}
	if canCheck && ri.Gated {
		cs, err := u.db.Gates.Candidates(ctx, repo, meta.CandidateQuery{Limit: candidatesShown})
		if err != nil {
			return err
		}
		var rows []candidateRow
		for _, c := range cs {
			checks, err := u.db.Gates.Checks(ctx, repo, c.Digest)
			if err != nil {
				return err
			}
			rows = append(rows, candidateRow{c, checks})
		}
		data["Candidates"] = rows
	}
	u.render(w, r, v, status, "activity", "Activity of "+repo, data)
	return nil
}

// activityRefused answers an activity form's error: a refusal the
// visitor can fix renders the page again with the message, after what
// (what was not done), in the form's section (refused).
func (u *UI) activityRefused(w http.ResponseWriter, r *http.Request, v *visitor, repo, section, action, what string, err error) error {
	return u.refused(r, err, section, action, func(status int, flash formFlash) error {
		flash.Error = what + ": " + flash.Error
		return u.activityPage(w, r, v, repo, status, flash)
	})
}

// adminAction checks the visitor may read the repository: one who may
// not learns nothing of it (404); the API decides the rest (admin).
func (u *UI) adminAction(r *http.Request, v *visitor, repo string) error {
	_, err := u.readable(r.Context(), v, repo)
	return err
}

// syncNow asks for a mirror sync at once: the API's sync-now, which
// checks, audits (repo_mirror_sync_now_requested) and wakes the mirror
// workers.
func (u *UI) syncNow(w http.ResponseWriter, r *http.Request, v *visitor, repo string) error {
	if err := u.adminAction(r, v, repo); err != nil {
		return err
	}
	if err := u.call(r, v, http.MethodPost, repoAPI(repo, "mirror", "sync-now"), nil, nil); err != nil {
		if e, ok := err.(*apiError); ok && e.Status == http.StatusNotFound {
			return fail(http.StatusNotFound, "%s is not a mirror.", repo)
		}
		return u.activityRefused(w, r, v, repo, "mirror", "sync-now", "No sync was asked for", err)
	}
	http.Redirect(w, r, repoPath(repo)+"/activity", http.StatusSeeOther)
	return nil
}

// resetNotification re-enables a notification its failures disabled:
// the API's reset (audited as reset_repo_notification).
func (u *UI) resetNotification(w http.ResponseWriter, r *http.Request, v *visitor, repo, uuid string) error {
	if err := u.adminAction(r, v, repo); err != nil {
		return err
	}
	if err := u.call(r, v, http.MethodPost, repoAPI(repo, "notification", esc(uuid)), nil, nil); err != nil {
		return u.activityRefused(w, r, v, repo, "notifications", "notification/"+uuid+"/reset", "Notification "+uuid+" was not reset", err)
	}
	http.Redirect(w, r, repoPath(repo)+"/activity", http.StatusSeeOther)
	return nil
}

// restoreTag puts a deleted tag back on the manifest it last named: the
// API's restore (Quay's), which checks the digest is in the tag's history,
// refuses an immutable tag and records a repo_push.
func (u *UI) restoreTag(w http.ResponseWriter, r *http.Request, v *visitor, repo string) error {
	if _, err := u.readable(r.Context(), v, repo); err != nil {
		return err
	}
	tag := strings.TrimSpace(r.PostFormValue("tag"))
	if tag == "" {
		return u.activityRefused(w, r, v, repo, "deleted-tags", "restore-tag", "Nothing was restored", fail(http.StatusBadRequest, "Name the tag to restore."))
	}
	body := map[string]string{"manifest_digest": strings.TrimSpace(r.PostFormValue("digest"))}
	if err := u.call(r, v, http.MethodPost, repoAPI(repo, "tag", esc(tag), "restore"), body, nil); err != nil {
		return u.activityRefused(w, r, v, repo, "deleted-tags", "restore-tag", "Tag "+tag+" was not restored", err)
	}
	http.Redirect(w, r, repoPath(repo)+"/activity", http.StatusSeeOther)
	return nil
}
